"""What a target family is: the one place that knows a kind of network.

A family (ViT, GPT-2, Llama) is a module of ``logah.families`` holding, for its networks:

* the **architecture record**: a frozen dataclass (``TargetArch``) with the library's own field
  names (torchvision's, Hugging Face's), generic ``depth`` / ``width`` / ``heads``, an analytic
  parameter count, and validation of every field's type and range;
* its **spaces** (a subclass of ``logah.spaces.ArchSpace`` and named presets such as
  ``vits-1k``), **named targets** with notes, **target panels** (several shapes that a study
  compares inits on), **fine-tuning presets** and **study scales** (smoke / demo / cpu / paper);
* the **real model** (torchvision / Hugging Face, built on ``meta`` for graphs), a dummy input,
  the forward pass that gives logits, and the forward with predicted parameters bound in;
* the **graph rules**: which module owns which parameter, as what kind (``logah.layout``);
* the **parameter roles** a transfer reads (classifier, token embeddings, LM head), the
  residual projections GPT-2 scales, and the attention projections mimetic init shapes;
* **saving and loading** a predicted or fine-tuned model (a Hugging Face folder for text).

Everything else in the package asks the registry (``logah.families.get_family``) instead of
testing classes or names; an unknown family is one ``LogahError`` everywhere.

Two kinds of task exist, and each family is one of them: ``ImageFamily`` (classification of
images; outputs are classes) and ``CausalLMFamily`` (language modelling; outputs are a
vocabulary, the model a Hugging Face causal LM). Nothing here imports torch, torchvision or
transformers at module level: the analysis side reads records and labels without them.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from logah.errors import LogahError

IMAGE, TEXT = "image", "text"     # data kinds: what a family's task reads


@dataclass(frozen=True, kw_only=True)
class TargetArch(abc.ABC):
    """One architecture of a family: a small record that round-trips through JSON.

    Subclasses list their fields with the library's names and defaults and implement the
    generic view (``depth``, ``width``, ``heads``) and ``num_params``; ``validate`` checks every
    field's type (an ``int`` field holds a positive integer, never a bool; a ``bool`` field a
    bool; a ``float`` field a finite positive number) before the family's own relations."""

    family: ClassVar[str] = ""
    depth_field: ClassVar[str] = ""     # the field that holds ``depth`` (``with_depth``)

    @property
    @abc.abstractmethod
    def depth(self) -> int:
        """Number of transformer blocks."""

    @property
    @abc.abstractmethod
    def width(self) -> int:
        """Width of the residual stream."""

    @property
    @abc.abstractmethod
    def heads(self) -> int:
        """Attention heads (query heads where keys and values have fewer)."""

    @abc.abstractmethod
    def num_params(self) -> int:
        """Parameters of the built model (tied tensors once), computed without building it."""

    def check_relations(self) -> None:  # noqa: B027 (a hook: nothing to check by default)
        """Family rules between fields (heads divide the width, ...); ``LogahError`` if broken."""

    def validate(self) -> None:
        name = type(self).__name__
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), hints.get(f.name)
            if kind is bool:
                if not isinstance(value, bool):
                    raise LogahError(f"{name}: {f.name} must be true or false, got {value!r}")
            elif kind is int:
                if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                    raise LogahError(f"{name}: {f.name} must be a positive integer, got {value!r}")
            elif kind is float:
                if (not isinstance(value, (int, float)) or isinstance(value, bool)
                        or not math.isfinite(value) or value <= 0):
                    raise LogahError(f"{name}: {f.name} must be a positive number, got {value!r}")
        self.check_relations()

    def with_depth(self, depth: int) -> "TargetArch":
        """The same architecture with ``depth`` blocks."""
        return dataclasses.replace(self, **{self.depth_field: depth})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record, ``family`` first."""
        return {"family": self.family, **dataclasses.asdict(self)}

    def shape_label(self) -> str:
        """Depth, width and heads in a few characters, e.g. ``6x96/4h``."""
        return f"{self.depth}x{self.width}/{self.heads}h"


@dataclass(frozen=True, kw_only=True)
class StudyScale:
    """What a study trial of this family starts from at one scale (``logah.study.scales``):
    names of a GHN preset, a space, a target and a fine-tuning preset, the data of GHN training
    (``data``) and of fine-tuning (``finetune_data``, default the same), and settings of the GHN
    training and fine-tuning that this family needs beyond the scale's shared ones."""

    ghn: str
    space: str
    target: str
    tuning: str
    data: dict
    finetune_data: dict | None = None
    ghn_settings: dict = field(default_factory=dict)
    finetune_settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AttentionWeights:
    """The projections of one attention layer as views of the model's tensors, each in
    (out_features, in_features) layout whatever the module stores: ``q`` (H·dh × D), ``k`` and
    ``v`` (Hkv·dh × D), ``o`` (D × H·dh). Writing into them writes the model's parameters."""

    q: Any
    k: Any
    v: Any
    o: Any
    heads: int
    kv_heads: int


class TargetFamily(abc.ABC):
    """One family's knowledge; a module of ``logah.families`` defines one subclass and one
    instance, and the registry lists it. Class attributes are the family's data, methods its
    behaviour."""

    name: ClassVar[str]
    title: ClassVar[str]                              # how people write it: "GPT-2"
    arch_class: ClassVar[type]
    space_class: ClassVar[type]
    data_kind: ClassVar[str]                          # IMAGE or TEXT
    default_dataset: ClassVar[str]                    # offline data a command uses by default
    spaces: ClassVar[dict[str, Callable[[], Any]]]    # preset name -> space factory
    targets: ClassVar[dict[str, TargetArch]]          # named targets
    target_notes: ClassVar[dict[str, str]]            # one line per named target
    panels: ClassVar[dict[str, tuple[str, ...]]]      # panel name -> target names
    finetune_presets: ClassVar[dict[str, dict]]       # optimisation settings by name
    scales: ClassVar[dict[str, StudyScale]]           # smoke / demo / cpu / paper
    field_labels: ClassVar[dict[str, str]] = {}       # arch field -> words, for reports

    # -- records ------------------------------------------------------------------------------
    def arch_from_fields(self, fields: dict) -> TargetArch:
        known = {f.name for f in dataclasses.fields(self.arch_class)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise LogahError(f"architecture record ({self.name}): unknown fields {unknown}; "
                             f"expected some of {sorted(known)}")
        try:
            arch = self.arch_class(**fields)
        except TypeError as err:
            raise LogahError(f"architecture record ({self.name}): {err}") from None
        arch.validate()
        return arch

    # -- the real model -----------------------------------------------------------------------
    @abc.abstractmethod
    def build_model(self, arch: TargetArch, device: Any = "meta"):
        """The library's module for ``arch`` (its default init on a real device). On ``meta``
        its parameters have shapes only, but buffers computed from the config rather than
        learned (rotary frequencies) must be real, so that parameters bound to it compute."""

    @abc.abstractmethod
    def example_input(self, arch: TargetArch, device: Any = "meta", batch: int = 1,
                      seq_len: int = 8):
        """A dummy input for one forward pass."""

    @abc.abstractmethod
    def forward(self, model, arch: TargetArch, inputs):
        """Logits: (B, classes) or (B, T, vocab)."""

    @abc.abstractmethod
    def bound_forward(self, model, params: dict, arch: TargetArch, inputs):
        """Logits of ``model`` run with ``params`` in place of its own (``functional_call``)."""

    def trace_output(self, model, arch: TargetArch):
        """The output the computational graph is traced from (``logah.graph``)."""
        device = next(model.parameters()).device
        return self.forward(model, arch, self.example_input(arch, device=device))

    def finish_loaded(self, model, arch: TargetArch):
        """A module whose parameters were just assigned (tie what the family ties)."""
        return model

    def materialize(self, arch: TargetArch, params: dict):
        """A real module of ``arch`` holding ``params`` (built on ``meta``: no random init)."""
        model = self.build_model(arch, "meta")
        missing = [n for n, _ in model.named_parameters() if n not in params]
        if missing:
            raise LogahError(f"parameters lack {missing[:3]} for this {self.name} architecture")
        model.load_state_dict(params, strict=False, assign=True)
        return self.finish_loaded(model, arch)

    # -- graph rules and parameter roles ------------------------------------------------------
    @abc.abstractmethod
    def module_rules(self) -> list[tuple[type, dict[str, tuple[str, bool]]]]:
        """(module class, {parameter attribute: (kind, stored transposed)}), most specific
        first; the graph builder refuses a parameter whose module is not listed."""

    @abc.abstractmethod
    def attention_modules(self) -> tuple[type, ...]:
        """Module classes of attention (their inside is one ``msa`` node of the graph)."""

    def residual_projections(self, arch: TargetArch) -> tuple[str, ...]:
        """Parameter-name suffixes of weights that write into the residual stream and are
        scaled by 1/sqrt(2·depth) (GPT-2's rule); none by default."""
        return ()

    @abc.abstractmethod
    def attention_layers(self, model, arch: TargetArch) -> list[AttentionWeights]:
        """Every attention layer's projections (for mimetic initialisation)."""

    # -- task -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def num_outputs(self, arch: TargetArch) -> int:
        """Classes or vocabulary size."""

    @abc.abstractmethod
    def with_outputs(self, arch: TargetArch, n: int) -> TargetArch:
        """``arch`` with ``n`` classes or tokens (what the data needs)."""

    @abc.abstractmethod
    def output_names(self, arch: TargetArch) -> tuple[str, ...]:
        """Parameters whose rows are the outputs' (a classifier; a vocabulary's embeddings and
        LM head): what a transfer to other outputs re-initialises."""

    # -- transfer -------------------------------------------------------------------------------
    def novelties(self, arch: TargetArch, space) -> list[str]:
        """What ``arch`` has that no architecture of ``space`` has, beyond depth and width
        (those are what the paper generalises over); empty when nothing."""
        return [x for x in (novel("heads", arch.heads, space.head_counts()),) if x]

    # -- saving -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def write_config(self, arch: TargetArch, folder: Path, dtype: str) -> None:
        """Files besides the weights that make ``folder`` loadable (a HF ``config.json``
        saying the weights are ``dtype``)."""

    @abc.abstractmethod
    def load_folder(self, arch: TargetArch, folder: Path, read_weights: Callable[[Path], dict]):
        """The module saved in ``folder`` (weights from safetensors only, ``read_weights`` reads
        the folder's shards into a state dict), checked complete."""

    # -- describing -----------------------------------------------------------------------------
    def extra_histograms(self, archs: list[TargetArch]) -> dict[str, list]:
        """Values of family-specific fields to histogram in ``logah archs describe``."""
        return {}


def novel(what: str, value, seen) -> str:
    """``"heads 5 (space: 2, 4)"`` when ``value`` is not among ``seen``, else empty."""
    seen = sorted(set(seen))
    return "" if value in seen else f"{what} {value} (space: {', '.join(map(str, seen))})"
