"""The GPT-2 family: Hugging Face's ``GPT2LMHeadModel`` on language modelling.

Records use ``GPT2Config``'s names (``n_layer``, ``n_embd``, ``n_head``, ``vocab_size``,
``n_positions``, ``tie_word_embeddings``); the MLP is 4·n_embd. Spaces: ``gpts-1k`` (the paper's
GPTs-1K, App. F) and ``gpts-cpu``. Targets: GPT-2 small / medium / large, untied as the paper
evaluates them, and CPU-study targets deeper and wider than ``gpts-cpu``. HF's ``Conv1D`` stores
weights as (in, out): the graph rules mark them transposed so the decoder sees (out, in) like
every other linear layer (the anchor code ignores this). GPT-2 scales its residual projections
(``c_proj``) by 1/sqrt(2·n_layer), and so do its predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from logah.errors import LogahError
from logah.families.base import AttentionWeights, TargetArch
from logah.families.kinds import CausalLMFamily, text_scales
from logah.layout import BIAS, EMBEDDING, NORM, WEIGHT
from logah.spaces import PAPER_GPT2_HEADS, ArchSpace


@dataclass(frozen=True, kw_only=True)
class GPT2Arch(TargetArch):
    """A Hugging Face ``GPT2LMHeadModel``. Field names follow ``GPT2Config``; MLP width is 4·n_embd."""

    family: ClassVar[str] = "gpt2"
    depth_field: ClassVar[str] = "n_layer"
    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int = 50257
    n_positions: int = 1024
    tie_word_embeddings: bool = False

    @property
    def depth(self) -> int:
        return self.n_layer

    @property
    def width(self) -> int:
        return self.n_embd

    @property
    def heads(self) -> int:
        return self.n_head

    def check_relations(self) -> None:
        if self.n_embd % self.n_head:
            raise LogahError(f"GPT-2: n_head={self.n_head} does not divide n_embd={self.n_embd}")

    def num_params(self) -> int:
        return gpt2_params(n_layer=self.n_layer, n_embd=self.n_embd, vocab_size=self.vocab_size,
                           n_positions=self.n_positions,
                           tie_word_embeddings=self.tie_word_embeddings)

    def shape_label(self) -> str:
        return super().shape_label() + (" tied" if self.tie_word_embeddings else "")


def gpt2_params(*, n_layer: int, n_embd: int, vocab_size: int, n_positions: int,
                tie_word_embeddings: bool) -> int:
    d = n_embd
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (4 * d * d + 4 * d) + (4 * d * d + d)
    head = 0 if tie_word_embeddings else vocab_size * d
    return vocab_size * d + n_positions * d + n_layer * block + 2 * d + head


@dataclass(frozen=True, kw_only=True)
class GPT2Space(ArchSpace):
    """Hugging Face GPT-2s. The MLP is fixed at 4·n_embd by ``GPT2Arch`` (no ratio to sweep)."""

    family: ClassVar[str] = "gpt2"
    vocab_size: int = 50257
    n_positions: int = 1024
    tie_word_embeddings: bool = False

    def validate_family(self) -> None:
        self._check("vocab_size")
        self._check("n_positions")
        if not isinstance(self.tie_word_embeddings, bool):
            raise LogahError(f"space {self.name}: tie_word_embeddings must be true or false, "
                             f"got {self.tie_word_embeddings!r}")

    def make(self, depth, width, heads, rng) -> GPT2Arch:
        return GPT2Arch(n_layer=depth, n_embd=width, n_head=heads, vocab_size=self.vocab_size,
                        n_positions=self.n_positions, tie_word_embeddings=self.tie_word_embeddings)

    def extremes(self, depth, width):
        return [gpt2_params(n_layer=depth, n_embd=width, vocab_size=self.vocab_size,
                            n_positions=self.n_positions,
                            tie_word_embeddings=self.tie_word_embeddings)]


def gpts_1k() -> GPT2Space:
    """GPTs-1K (paper App. F): n_layer 3..9; n_embd step 8 in 72..176 (L 6-9), 128..176 (L 4-5),
    176..256 (L 3); 8 heads; untied 50257-token embeddings, context 1024; 7.7M-28.4M parameters
    (the paper says "within 30M")."""
    return GPT2Space(name="gpts-1k", depth_min=3, depth_max=9,
                     width_bands=((6, 9, 72, 176, 8),
                                  (4, 5, 128, 176, 8),
                                  (3, 3, 176, 256, 8)),
                     heads_rule=PAPER_GPT2_HEADS, vocab_size=50257, n_positions=1024,
                     tie_word_embeddings=False, max_params=30_000_000, num_archs=1000, seed=1)


def gpts_cpu() -> GPT2Space:
    """Laptop GPT-2s: depth 1..4, width 32..64 (L 1-2) or 16..48 (L 3-4) step 8, 4 heads, untied
    4096-token vocabulary (the ``get_tokenizer("bpe")`` default), context 128; 143k-633k
    parameters, dominated (as in GPTs-1K) by the embeddings."""
    return GPT2Space(name="gpts-cpu", depth_min=1, depth_max=4,
                     width_bands=((1, 2, 32, 64, 8),
                                  (3, 4, 16, 48, 8)),
                     heads_rule=((4, (4,)), (2, (2,)), (1, (1,))), vocab_size=4096, n_positions=128,
                     tie_word_embeddings=False, max_params=1_000_000, num_archs=100, seed=1)


TARGETS: dict[str, GPT2Arch] = {
    "gpt2-s": GPT2Arch(n_layer=12, n_embd=768, n_head=12),
    "gpt2-m": GPT2Arch(n_layer=24, n_embd=1024, n_head=16),
    "gpt2-l": GPT2Arch(n_layer=36, n_embd=1280, n_head=20),
    # CPU targets: deeper and wider than gpts-cpu (depth <= 4, width <= 64), its vocabulary and context
    "gpt2-cpu-target": GPT2Arch(n_layer=6, n_embd=96, n_head=4, vocab_size=4096, n_positions=128),
    "gpt2-cpu-target-l": GPT2Arch(n_layer=8, n_embd=128, n_head=4, vocab_size=4096,
                                  n_positions=128),
}

TARGET_NOTES = {
    "gpt2-s": "GPT-2 small (124M with tied embeddings; untied here, as in the paper)",
    "gpt2-m": "GPT-2 medium, untied",
    "gpt2-l": "GPT-2 large, untied",
    "gpt2-cpu-target": "CPU study target: 6 layers, width 96, 4 heads, 4096 tokens, context 128",
    "gpt2-cpu-target-l": "CPU study target: 8 layers, width 128, 4 heads, 4096 tokens, context 128",
}

PANELS = {"gpt2-cpu-panel": ("gpt2-cpu-target", "gpt2-cpu-target-l")}

# AdamW, wd 1e-2. ``gpt2-paper``: lr 3e-6, 500 warm-up steps. ``gpt2-cpu``: a few hundred steps on
# 2 cores need a far larger lr; 4e-3 is the best of 5e-4-4e-3 for random and LoGAH inits of
# gpt2-cpu-target on Shakespeare (benchmarks/results/init_study.md).
FINETUNE_PRESETS = {
    "gpt2-paper": dict(optimizer="adamw", lr=3e-6, weight_decay=1e-2, warmup_steps=500,
                       steps=10_000, grad_clip=1.0, eval_every=500),
    "gpt2-cpu": dict(optimizer="adamw", lr=4e-3, weight_decay=1e-2, warmup_steps=30,
                     steps=300, grad_clip=1.0, eval_every=100),
}


class GPT2Family(CausalLMFamily):
    name = "gpt2"
    title = "GPT-2"
    arch_class = GPT2Arch
    space_class = GPT2Space
    default_dataset = "shakespeare"
    spaces = {"gpts-1k": gpts_1k, "gpts-cpu": gpts_cpu}
    targets = TARGETS
    target_notes = TARGET_NOTES
    panels = PANELS
    finetune_presets = FINETUNE_PRESETS
    scales = text_scales(ghn="logah-cpu-grid-mf", space="gpts-cpu", target="gpt2-cpu-target",
                         tuning="gpt2-cpu", paper_space="gpts-1k", paper_target="gpt2-s",
                         paper_tuning="gpt2-paper")
    context_field = "n_positions"
    embedding_name = "transformer.wte.weight"
    field_labels = {"n_layer": "depth (GPT-2 layers)", "n_embd": "width (GPT-2 embedding size)",
                    "n_head": "GPT-2 attention heads", "vocab_size": "vocabulary",
                    "n_positions": "context length", "tie_word_embeddings": "tied embeddings"}

    def hf_config(self, arch):
        from transformers import GPT2Config

        return GPT2Config(n_layer=arch.n_layer, n_embd=arch.n_embd, n_head=arch.n_head,
                          vocab_size=arch.vocab_size, n_positions=arch.n_positions,
                          tie_word_embeddings=arch.tie_word_embeddings,
                          bos_token_id=arch.vocab_size - 1, eos_token_id=arch.vocab_size - 1)

    def model_class(self):
        from transformers import GPT2LMHeadModel

        return GPT2LMHeadModel

    def module_rules(self):
        from torch import nn
        from transformers.pytorch_utils import Conv1D

        return [
            (nn.Linear, {"weight": (WEIGHT, False), "bias": (BIAS, False)}),
            (Conv1D, {"weight": (WEIGHT, True), "bias": (BIAS, False)}),
            (nn.LayerNorm, {"weight": (NORM, False), "bias": (NORM, False)}),
            (nn.Embedding, {"weight": (EMBEDDING, False)}),
        ]

    def residual_projections(self, arch):
        """GPT-2 scales the weights of ``c_proj`` (attention and MLP outputs) by 1/sqrt(2·n_layer)."""
        return ("c_proj.weight",)

    def attention_modules(self):
        from transformers.models.gpt2.modeling_gpt2 import GPT2Attention

        return (GPT2Attention,)

    def attention_layers(self, model, arch):
        """HF ``Conv1D`` stores (in, out): ``c_attn`` is (D, 3D) with q, k, v side by side, so
        the (out, in) views are its column blocks transposed."""
        d = arch.n_embd
        layers = []
        for block in model.transformer.h:
            w = block.attn.c_attn.weight
            layers.append(AttentionWeights(q=w[:, :d].t(), k=w[:, d:2 * d].t(), v=w[:, 2 * d:].t(),
                                           o=block.attn.c_proj.weight.t(), heads=arch.n_head,
                                           kv_heads=arch.n_head))
        return layers

    def novelties(self, arch, space):
        found = super().novelties(arch, space)
        if arch.n_positions > space.n_positions:
            found.append(f"context {arch.n_positions} (space: {space.n_positions})")
        if arch.tie_word_embeddings != space.tie_word_embeddings:
            found.append(f"{'tied' if arch.tie_word_embeddings else 'untied'} embeddings "
                         f"(space: {'tied' if space.tie_word_embeddings else 'untied'})")
        return found


FAMILY = GPT2Family()
