"""The Llama family: Hugging Face's ``LlamaForCausalLM`` on language modelling.

What people train today, and what sets it apart from GPT-2 in the graph and the decoder:

* **RMSNorm** (weight only, no bias): one ``ln`` node with one vector. Its mean of squares is
  part of the norm (``logah.graph`` folds every function inside a norm module into the norm's
  node), not a global average pooling;
* **SwiGLU MLP**: ``down(silu(gate(x)) * up(x))``, three weight matrices, no biases; the gate and
  the up projection are two ``conv`` nodes that both feed the down projection;
* **rotary positions**: no position-embedding parameters at all;
* **grouped-query attention**: ``num_key_value_heads`` (H_kv) below ``num_attention_heads`` (H)
  makes k and v (H_kv·d_h × D) narrower than q;
* **tied or untied** output head (``tie_word_embeddings``).

Records use ``LlamaConfig``'s names. Spaces: ``llamas-cpu`` (laptop-sized) and ``llamas-1k``
(paper scale, in the spirit of GPTs-1K); each draws, besides depth, width and heads, the KV-head
ratio H / H_kv, the MLP width ratio and the tying. Named targets: ``llama-cpu-target`` (and
``-l``), deeper and wider than ``llamas-cpu``, and four real shapes whose parameter counts equal
Hugging Face's: ``smollm2-135m``, ``tinyllama-1.1b``, ``llama-2-7b``, ``llama-3.1-8b``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from logah.errors import LogahError
from logah.families.base import AttentionWeights, TargetArch, novel
from logah.families.kinds import CausalLMFamily, text_scales
from logah.layout import EMBEDDING, NORM, WEIGHT
from logah.spaces import PAPER_GPT2_HEADS, ArchSpace, heads_for


@dataclass(frozen=True, kw_only=True)
class LlamaArch(TargetArch):
    """A Hugging Face ``LlamaForCausalLM``. Field names follow ``LlamaConfig``; head width is
    hidden_size / num_attention_heads, and there are no biases."""

    family: ClassVar[str] = "llama"
    depth_field: ClassVar[str] = "num_hidden_layers"
    num_hidden_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int = 32000
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    @property
    def depth(self) -> int:
        return self.num_hidden_layers

    @property
    def width(self) -> int:
        return self.hidden_size

    @property
    def heads(self) -> int:
        return self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def check_relations(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise LogahError(f"Llama: num_attention_heads={self.num_attention_heads} does not "
                             f"divide hidden_size={self.hidden_size}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise LogahError(f"Llama: num_key_value_heads={self.num_key_value_heads} does not "
                             f"divide num_attention_heads={self.num_attention_heads}")

    def num_params(self) -> int:
        return llama_params(self)

    def shape_label(self) -> str:
        kv = f" kv{self.num_key_value_heads}" if self.num_key_value_heads != self.heads else ""
        return super().shape_label() + kv + (" tied" if self.tie_word_embeddings else "")


def llama_params(arch: LlamaArch) -> int:
    d, i, v = arch.hidden_size, arch.intermediate_size, arch.vocab_size
    kv = arch.num_key_value_heads * arch.head_dim
    block = 2 * d * d + 2 * d * kv + 3 * d * i + 2 * d   # q, o; k, v; gate, up, down; 2 RMSNorms
    head = 0 if arch.tie_word_embeddings else v * d
    return v * d + arch.num_hidden_layers * block + d + head


def _ratios(values, what: str, space: str) -> tuple:
    try:
        out = tuple(values)
    except TypeError:
        raise LogahError(f"space {space}: {what} must be a list, got {values!r}") from None
    if not out:
        raise LogahError(f"space {space}: {what} is empty")
    return out


@dataclass(frozen=True, kw_only=True)
class LlamaSpace(ArchSpace):
    """Hugging Face Llamas. Besides depth, width and heads, each model draws its KV-head ratio
    (H / H_kv among ``kv_ratios`` that divide H; 1 is multi-head attention), its MLP width
    (``mlp_ratios`` × width, rounded to a multiple of ``mlp_multiple``) and whether its output
    head is tied (among ``tie_choices``)."""

    family: ClassVar[str] = "llama"
    kv_ratios: tuple[int, ...] = (1, 2, 4)
    mlp_ratios: tuple[float, ...] = (2.0, 8 / 3, 3.5)
    mlp_multiple: int = 8
    tie_choices: tuple[bool, ...] = (False, True)
    vocab_size: int = 32000
    max_position_embeddings: int = 1024

    def __post_init__(self) -> None:
        for name in ("kv_ratios", "mlp_ratios", "tie_choices"):
            object.__setattr__(self, name, _ratios(getattr(self, name), name, self.name))
        super().__post_init__()

    def validate_family(self) -> None:
        for name in ("vocab_size", "max_position_embeddings", "mlp_multiple"):
            self._check(name)
        if any(not isinstance(r, int) or isinstance(r, bool) or r <= 0 for r in self.kv_ratios):
            raise LogahError(f"space {self.name}: kv_ratios must be positive integers, "
                             f"got {self.kv_ratios!r}")
        if any(not isinstance(r, (int, float)) or isinstance(r, bool) or not r > 0
               for r in self.mlp_ratios):
            raise LogahError(f"space {self.name}: mlp_ratios must be positive numbers, "
                             f"got {self.mlp_ratios!r}")
        if any(not isinstance(t, bool) for t in self.tie_choices):
            raise LogahError(f"space {self.name}: tie_choices must be true/false values, "
                             f"got {self.tie_choices!r}")

    def mlp(self, width: int, ratio: float) -> int:
        return max(self.mlp_multiple,
                   self.mlp_multiple * round(ratio * width / self.mlp_multiple))

    def kv_heads(self, heads: int) -> tuple[int, ...]:
        """KV-head counts the ratios allow for ``heads`` (at least ``heads`` itself)."""
        return tuple(dict.fromkeys(heads // r for r in self.kv_ratios if heads % r == 0)) or (heads,)

    def make(self, depth, width, heads, rng) -> LlamaArch:
        kv_choices = self.kv_heads(heads)
        kv = kv_choices[int(rng.integers(len(kv_choices)))]
        ratio = self.mlp_ratios[int(rng.integers(len(self.mlp_ratios)))]
        tied = self.tie_choices[int(rng.integers(len(self.tie_choices)))]
        return LlamaArch(num_hidden_layers=depth, hidden_size=width, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=self.mlp(width, ratio),
                         vocab_size=self.vocab_size,
                         max_position_embeddings=self.max_position_embeddings,
                         tie_word_embeddings=tied)

    def extremes(self, depth, width):
        counts = []
        for heads in heads_for(width, self.heads_rule):
            for kv in self.kv_heads(heads):
                for ratio in self.mlp_ratios:
                    for tied in self.tie_choices:
                        counts.append(llama_params(LlamaArch(
                            num_hidden_layers=depth, hidden_size=width, num_attention_heads=heads,
                            num_key_value_heads=kv, intermediate_size=self.mlp(width, ratio),
                            vocab_size=self.vocab_size, tie_word_embeddings=tied)))
        return counts


def llamas_cpu() -> LlamaSpace:
    """Laptop Llamas: depth 1..4, width 32..64 (L 1-2) or 16..48 (L 3-4) step 8, 2 or 4 heads
    with 1 or 2 query heads per KV head, MLP 2, 8/3 or 3.5 × width (multiple of 8), tied or
    untied 4096-token vocabulary, context 128; 73k-643k parameters."""
    return LlamaSpace(name="llamas-cpu", depth_min=1, depth_max=4,
                      width_bands=((1, 2, 32, 64, 8),
                                   (3, 4, 16, 48, 8)),
                      heads_rule=((4, (2, 4)), (2, (2,)), (1, (1,))), kv_ratios=(1, 2),
                      mlp_ratios=(2.0, 8 / 3, 3.5), mlp_multiple=8, tie_choices=(False, True),
                      vocab_size=4096, max_position_embeddings=128, max_params=1_000_000,
                      num_archs=100, seed=1)


def llamas_1k() -> LlamaSpace:
    """Paper scale, in the spirit of GPTs-1K: 1000 Llamas, depth 3..9; hidden size step 32 in
    128..256 (L 6-9), 256..384 (L 4-5), 384..512 (L 3); 8 heads where they divide the width
    (else 4), 1, 2 or 4 query heads per KV head, MLP 2, 8/3 or 3.5 × width (multiple of 32),
    tied or untied 32000-token vocabulary (Llama-2's size), context 1024; 4.9M-44.2M
    parameters (the 50M cap rejects none)."""
    return LlamaSpace(name="llamas-1k", depth_min=3, depth_max=9,
                      width_bands=((6, 9, 128, 256, 32),
                                   (4, 5, 256, 384, 32),
                                   (3, 3, 384, 512, 32)),
                      heads_rule=PAPER_GPT2_HEADS, kv_ratios=(1, 2, 4),
                      mlp_ratios=(2.0, 8 / 3, 3.5), mlp_multiple=32, tie_choices=(False, True),
                      vocab_size=32000, max_position_embeddings=1024, max_params=50_000_000,
                      num_archs=1000, seed=1)


def _cpu(layers: int, width: int, heads: int, kv: int, mlp: int, tied: bool = False) -> LlamaArch:
    return LlamaArch(num_hidden_layers=layers, hidden_size=width, num_attention_heads=heads,
                     num_key_value_heads=kv, intermediate_size=mlp, vocab_size=4096,
                     max_position_embeddings=128, tie_word_embeddings=tied)


TARGETS: dict[str, LlamaArch] = {
    # CPU targets: deeper and wider than llamas-cpu (depth <= 4, width <= 64), its vocabulary
    "llama-cpu-target": _cpu(6, 96, 4, 2, 256),
    "llama-cpu-target-l": _cpu(8, 128, 8, 2, 344, tied=True),
    # real shapes (their Hugging Face configs), parameter counts equal to Hugging Face's
    "smollm2-135m": LlamaArch(num_hidden_layers=30, hidden_size=576, num_attention_heads=9,
                              num_key_value_heads=3, intermediate_size=1536, vocab_size=49152,
                              max_position_embeddings=8192, tie_word_embeddings=True,
                              rope_theta=100000.0, rms_norm_eps=1e-5),
    "tinyllama-1.1b": LlamaArch(num_hidden_layers=22, hidden_size=2048, num_attention_heads=32,
                                num_key_value_heads=4, intermediate_size=5632, vocab_size=32000,
                                max_position_embeddings=2048, rms_norm_eps=1e-5),
    "llama-2-7b": LlamaArch(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32,
                            num_key_value_heads=32, intermediate_size=11008, vocab_size=32000,
                            max_position_embeddings=4096, rms_norm_eps=1e-5),
    "llama-3.1-8b": LlamaArch(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32,
                              num_key_value_heads=8, intermediate_size=14336, vocab_size=128256,
                              max_position_embeddings=131072, rope_theta=500000.0,
                              rms_norm_eps=1e-5),
}

TARGET_NOTES = {
    "llama-cpu-target": "CPU study target: 6 layers, width 96, 4 heads (2 KV), MLP 256, "
                        "4096 tokens, context 128",
    "llama-cpu-target-l": "CPU study target: 8 layers, width 128, 8 heads (2 KV), MLP 344, tied",
    "smollm2-135m": "SmolLM2-135M's shape: 30 layers, width 576, 9 heads (3 KV), tied, 134.5M",
    "tinyllama-1.1b": "TinyLlama-1.1B's shape: 22 layers, width 2048, 32 heads (4 KV), 1.10B",
    "llama-2-7b": "Llama-2-7B's shape: 32 layers, width 4096, 32 heads, MLP 11008, 6.74B",
    "llama-3.1-8b": "Llama-3.1-8B's shape: 32 layers, width 4096, 32 heads (8 KV), 128256 "
                    "tokens, 8.03B",
}

PANELS = {"llama-cpu-panel": ("llama-cpu-target", "llama-cpu-target-l")}

FINETUNE_PRESETS = {
    "llama-paper": dict(optimizer="adamw", lr=3e-6, weight_decay=1e-2, warmup_steps=500,
                        steps=10_000, grad_clip=1.0, eval_every=500),
    "llama-cpu": dict(optimizer="adamw", lr=4e-3, weight_decay=1e-2, warmup_steps=30,
                      steps=300, grad_clip=1.0, eval_every=100),
}


class LlamaFamily(CausalLMFamily):
    name = "llama"
    title = "Llama"
    arch_class = LlamaArch
    space_class = LlamaSpace
    default_dataset = "shakespeare"
    spaces = {"llamas-1k": llamas_1k, "llamas-cpu": llamas_cpu}
    targets = TARGETS
    target_notes = TARGET_NOTES
    panels = PANELS
    finetune_presets = FINETUNE_PRESETS
    scales = text_scales(ghn="logah-cpu-grid-mf", space="llamas-cpu", target="llama-cpu-target",
                         tuning="llama-cpu", paper_space="llamas-1k", paper_target="smollm2-135m",
                         paper_tuning="llama-paper")
    context_field = "max_position_embeddings"
    embedding_name = "model.embed_tokens.weight"
    field_labels = {"num_hidden_layers": "depth (Llama layers)",
                    "hidden_size": "width (Llama hidden size)",
                    "num_attention_heads": "Llama attention heads",
                    "num_key_value_heads": "Llama key/value heads",
                    "intermediate_size": "Llama MLP width", "vocab_size": "vocabulary",
                    "max_position_embeddings": "context length",
                    "tie_word_embeddings": "tied embeddings"}

    def hf_config(self, arch):
        from transformers import LlamaConfig

        return LlamaConfig(num_hidden_layers=arch.num_hidden_layers, hidden_size=arch.hidden_size,
                           num_attention_heads=arch.num_attention_heads,
                           num_key_value_heads=arch.num_key_value_heads,
                           intermediate_size=arch.intermediate_size, vocab_size=arch.vocab_size,
                           max_position_embeddings=arch.max_position_embeddings,
                           tie_word_embeddings=arch.tie_word_embeddings,
                           rope_theta=arch.rope_theta, rms_norm_eps=arch.rms_norm_eps,
                           bos_token_id=arch.vocab_size - 1, eos_token_id=arch.vocab_size - 1)

    def model_class(self):
        from transformers import LlamaForCausalLM

        return LlamaForCausalLM

    def build_model(self, arch, device="meta"):
        """On ``meta``, the rotary frequencies (a buffer computed from the config, not a
        parameter) are real, on the CPU: predicted parameters bound to the module then compute."""
        import torch
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        model = super().build_model(arch, device)
        if torch.device(device).type == "meta":
            with torch.device("cpu"):
                model.model.rotary_emb = LlamaRotaryEmbedding(config=model.config)
        return model

    def module_rules(self):
        from torch import nn
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        return [
            (nn.Linear, {"weight": (WEIGHT, False)}),
            (LlamaRMSNorm, {"weight": (NORM, False)}),
            (nn.Embedding, {"weight": (EMBEDDING, False)}),
        ]

    def attention_modules(self):
        from transformers.models.llama.modeling_llama import LlamaAttention

        return (LlamaAttention,)

    def attention_layers(self, model, arch):
        return [AttentionWeights(q=layer.self_attn.q_proj.weight, k=layer.self_attn.k_proj.weight,
                                 v=layer.self_attn.v_proj.weight, o=layer.self_attn.o_proj.weight,
                                 heads=arch.num_attention_heads, kv_heads=arch.num_key_value_heads)
                for layer in model.model.layers]

    def novelties(self, arch, space):
        found = super().novelties(arch, space)
        ratios = sorted({h // kv for h in space.head_counts() for kv in space.kv_heads(h)})
        found.append(novel("query heads per KV head", arch.heads // arch.num_key_value_heads,
                           ratios))
        if arch.max_position_embeddings > space.max_position_embeddings:
            found.append(f"context {arch.max_position_embeddings} "
                         f"(space: {space.max_position_embeddings})")
        if arch.tie_word_embeddings not in space.tie_choices:
            found.append(f"{'tied' if arch.tie_word_embeddings else 'untied'} embeddings "
                         f"(space: {'tied' if space.tie_choices[0] else 'untied'} only)")
        return [x for x in found if x]

    def extra_histograms(self, archs):
        return {"kv_heads": [a.num_key_value_heads for a in archs],
                "tied": [a.tie_word_embeddings for a in archs]}


FAMILY = LlamaFamily()
