"""The ViT family: torchvision's ``VisionTransformer`` on image classification.

Records use torchvision's constructor names (``num_layers``, ``hidden_dim``, ``num_heads``,
``mlp_dim``, ``image_size``, ``patch_size``, ``num_classes``). Spaces: ``vits-1k`` (the paper's
ViTs-1K, App. E), ``vits-cpu`` (laptop-sized) and ``vits-cpu-deep`` (laptop-sized, as deep as the
CPU panel). Named targets: the paper's CIFAR ViTs
(``vit-s``/``-b``/``-l``: ViT-S/2, B/2, L/2 at 32 px), torchvision's ImageNet ViTs
(``vit-b-16`` ...) and CPU-study targets deeper and wider than ``vits-cpu``; the panel
``vit-cpu-panel`` holds four CPU shapes that differ in depth, width, heads, patch size, image size
and MLP ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from logah.errors import LogahError
from logah.families.base import AttentionWeights, StudyScale, TargetArch, novel
from logah.families.kinds import ImageFamily
from logah.layout import BIAS, EMBEDDING, NORM, WEIGHT
from logah.spaces import PAPER_VIT_HEADS, ArchSpace


@dataclass(frozen=True, kw_only=True)
class ViTArch(TargetArch):
    """A torchvision ``VisionTransformer``. Field names follow torchvision's constructor."""

    family: ClassVar[str] = "vit"
    depth_field: ClassVar[str] = "num_layers"
    num_layers: int
    hidden_dim: int
    num_heads: int
    mlp_dim: int
    image_size: int = 32
    patch_size: int = 2
    num_classes: int = 100

    @property
    def depth(self) -> int:
        return self.num_layers

    @property
    def width(self) -> int:
        return self.hidden_dim

    @property
    def heads(self) -> int:
        return self.num_heads

    def check_relations(self) -> None:
        if self.hidden_dim % self.num_heads:
            raise LogahError(f"ViT: num_heads={self.num_heads} does not divide "
                             f"hidden_dim={self.hidden_dim}")
        if self.image_size % self.patch_size:
            raise LogahError(f"ViT: patch_size={self.patch_size} does not divide "
                             f"image_size={self.image_size}")

    def num_params(self) -> int:
        return vit_params(num_layers=self.num_layers, hidden_dim=self.hidden_dim,
                          mlp_dim=self.mlp_dim, image_size=self.image_size,
                          patch_size=self.patch_size, num_classes=self.num_classes)

    def shape_label(self) -> str:
        return f"{super().shape_label()} p{self.patch_size} {self.image_size}px"


def vit_params(*, num_layers: int, hidden_dim: int, mlp_dim: int, image_size: int, patch_size: int,
               num_classes: int, channels: int = 3) -> int:
    d, m = hidden_dim, mlp_dim
    tokens = (image_size // patch_size) ** 2 + 1                # patches + class token
    stem = channels * patch_size ** 2 * d + d + d + tokens * d  # conv_proj, class token, pos emb
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * m + m) + (m * d + d)
    return stem + num_layers * block + 2 * d + d * num_classes + num_classes


@dataclass(frozen=True, kw_only=True)
class ViTSpace(ArchSpace):
    """torchvision ViTs. ``mlp_dim = round(mlp_ratio * width)``; one patch size drawn per model."""

    family: ClassVar[str] = "vit"
    mlp_ratio: float = 4.0
    patch_sizes: tuple[int, ...] = (2,)
    image_size: int = 32
    num_classes: int = 100

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "patch_sizes", tuple(int(p) for p in self.patch_sizes))
        except (TypeError, ValueError):
            raise LogahError(f"space {self.name}: patch_sizes must be integers, "
                             f"got {self.patch_sizes!r}") from None
        super().__post_init__()

    def validate_family(self) -> None:
        self._check("image_size")
        self._check("num_classes")
        if (not isinstance(self.mlp_ratio, (int, float)) or isinstance(self.mlp_ratio, bool)
                or not self.mlp_ratio > 0):
            raise LogahError(f"space {self.name}: mlp_ratio must be positive, got {self.mlp_ratio!r}")
        if not self.patch_sizes or any(p <= 0 or self.image_size % p for p in self.patch_sizes):
            raise LogahError(f"space {self.name}: patch_sizes {self.patch_sizes} must be non-empty "
                             f"and divide image_size={self.image_size}")

    def mlp(self, width: int) -> int:
        return max(1, round(self.mlp_ratio * width))

    def make(self, depth, width, heads, rng) -> ViTArch:
        patch = self.patch_sizes[int(rng.integers(len(self.patch_sizes)))]
        return ViTArch(num_layers=depth, hidden_dim=width, num_heads=heads, mlp_dim=self.mlp(width),
                       image_size=self.image_size, patch_size=patch, num_classes=self.num_classes)

    def extremes(self, depth, width):
        return [vit_params(num_layers=depth, hidden_dim=width, mlp_dim=self.mlp(width),
                           image_size=self.image_size, patch_size=p, num_classes=self.num_classes)
                for p in self.patch_sizes]


def vits_1k() -> ViTSpace:
    """ViTs-1K (paper App. E): depth 3..9; width step 32 in 128..256 (L 6-9), 256..384 (L 4-5),
    384..512 (L 3); paper heads rule; MLP 4·D; 32x32 images, patch 2, 100 classes; 1.2M-9.7M
    parameters, so the paper's 10M cap never rejects anything."""
    return ViTSpace(name="vits-1k", depth_min=3, depth_max=9,
                    width_bands=((6, 9, 128, 256, 32),
                                 (4, 5, 256, 384, 32),
                                 (3, 3, 384, 512, 32)),
                    heads_rule=PAPER_VIT_HEADS, mlp_ratio=4.0, patch_sizes=(2,), image_size=32,
                    num_classes=100, max_params=10_000_000, num_archs=1000, seed=1)


def vits_cpu() -> ViTSpace:
    """Laptop ViTs: depth 1..4, width 32..64 (L 1-2) or 16..48 (L 3-4) step 8, 2 or 4 heads,
    32x32 images in 4x4 or 8x8 patches, 10 classes (Fashion-MNIST, digits); 12k-124k parameters."""
    return ViTSpace(name="vits-cpu", depth_min=1, depth_max=4,
                    width_bands=((1, 2, 32, 64, 8),
                                 (3, 4, 16, 48, 8)),
                    heads_rule=((4, (2, 4)), (2, (2,)), (1, (1,))), mlp_ratio=4.0, patch_sizes=(4, 8),
                    image_size=32, num_classes=10, max_params=200_000, num_archs=100, seed=1)


def vits_cpu_deep() -> ViTSpace:
    """``vits-cpu`` with depths up to 10, as deep as the CPU panel's deepest target
    (``vit-cpu-deep-narrow``): depth 1..10, width 32..64 (L 1-2), 16..48 (L 3-4) or 16..32
    (L 5-10) step 8; otherwise ``vits-cpu``. A GHN trained on it has seen every depth the panel
    asks for; its widths stay below the panel's, as ``vits-cpu``'s do."""
    return ViTSpace(name="vits-cpu-deep", depth_min=1, depth_max=10,
                    width_bands=((1, 2, 32, 64, 8),
                                 (3, 4, 16, 48, 8),
                                 (5, 10, 16, 32, 8)),
                    heads_rule=((4, (2, 4)), (2, (2,)), (1, (1,))), mlp_ratio=4.0, patch_sizes=(4, 8),
                    image_size=32, num_classes=10, max_params=200_000, num_archs=100, seed=1)


def _cpu(num_layers: int, hidden_dim: int, num_heads: int, mlp_dim: int, patch_size: int,
         image_size: int = 32) -> ViTArch:
    return ViTArch(num_layers=num_layers, hidden_dim=hidden_dim, num_heads=num_heads,
                   mlp_dim=mlp_dim, image_size=image_size, patch_size=patch_size, num_classes=10)


# Paper targets (App. C, Tabs. 6-7) at CIFAR resolution (32x32, patch 2, 100 classes): the
# paper's ViT-B is a ViT-B/2, not torchvision's ImageNet ViT-B/16; those are here too, under
# torchvision's names with dashes. CPU targets: deliberately deeper or wider than anything
# vits-cpu holds (depth <= 4, width <= 64), with the space's 10 classes.
TARGETS: dict[str, ViTArch] = {
    "vit-s": ViTArch(num_layers=12, hidden_dim=384, num_heads=6, mlp_dim=1536),
    "vit-b": ViTArch(num_layers=12, hidden_dim=768, num_heads=12, mlp_dim=3072),
    "vit-l": ViTArch(num_layers=24, hidden_dim=1024, num_heads=16, mlp_dim=4096),
    **{f"vit-{size}-{patch}": ViTArch(num_layers=layers, hidden_dim=width, num_heads=heads,
                                      mlp_dim=4 * width, image_size=224, patch_size=patch,
                                      num_classes=1000)
       for size, layers, width, heads, patches in (("b", 12, 768, 12, (16, 32)),
                                                   ("l", 24, 1024, 16, (16, 32)),
                                                   ("h", 32, 1280, 16, (14,)))
       for patch in patches},
    "vit-cpu-target": _cpu(6, 96, 4, 384, 4),
    "vit-cpu-target-l": _cpu(8, 128, 4, 512, 4),
    "vit-cpu-deep-narrow": _cpu(10, 48, 6, 96, 3, image_size=24),
    "vit-cpu-wide-shallow": _cpu(3, 144, 8, 432, 7, image_size=28),
}

TARGET_NOTES = {
    "vit-s": "the paper's CIFAR ViT-S/2: 12 layers, width 384, 32 px, patch 2, 100 classes",
    "vit-b": "the paper's CIFAR ViT-B/2: 12 layers, width 768, 32 px, patch 2, 100 classes",
    "vit-l": "the paper's CIFAR ViT-L/2: 24 layers, width 1024, 32 px, patch 2, 100 classes",
    **{f"vit-{s}-{p}": f"torchvision's vit_{s}_{p}: ImageNet, 224 px, patch {p}, 1000 classes"
       for s, p in (("b", 16), ("b", 32), ("l", 16), ("l", 32), ("h", 14))},
    "vit-cpu-target": "CPU study target: 6 layers, width 96, 4 heads, 32 px, patch 4, 10 classes",
    "vit-cpu-target-l": "CPU study target: 8 layers, width 128, 4 heads, 32 px, patch 4",
    "vit-cpu-deep-narrow": "CPU panel: 10 layers, width 48, 6 heads, 24 px, patch 3, MLP ratio 2",
    "vit-cpu-wide-shallow": "CPU panel: 3 layers, width 144, 8 heads, 28 px, patch 7, MLP ratio 3",
}

PANELS = {"vit-cpu-panel": ("vit-cpu-target", "vit-cpu-target-l", "vit-cpu-deep-narrow",
                            "vit-cpu-wide-shallow")}

# SGD, momentum 0.9, wd 1e-2, cosine; ``vit-paper``: 100 CIFAR epochs at batch 64, lr from a grid.
# ``vit-cpu``: a few hundred steps on 2 cores; lr 0.05 is the best of 0.01-0.1 for random and
# LoGAH inits of vit-cpu-target on Fashion-MNIST (benchmarks/results/init_study.md).
FINETUNE_PRESETS = {
    "vit-paper": dict(optimizer="sgd", lr=0.02, momentum=0.9, weight_decay=1e-2,
                      warmup_steps=0, steps=78_200, grad_clip=1.0, eval_every=782),
    "vit-cpu": dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-2,
                    warmup_steps=10, steps=300, grad_clip=1.0, eval_every=100),
}

_CIFAR_STEPS_PER_EPOCH = 50_000 // 64

SCALES = {
    "smoke": StudyScale(ghn="logah-cpu-grid-mf", space="vits-cpu", target="vit-cpu-target",
                        tuning="vit-cpu",
                        data=dict(dataset="fashion-mnist", batch_size=32, eval_batches=2),
                        finetune_data=dict(dataset="fashion-mnist", batch_size=32, eval_batches=4)),
    # the smoke data; fine-tuning judged on 16 validation batches so that the result is stable
    "demo": StudyScale(ghn="logah-cpu-grid-mf", space="vits-cpu", target="vit-cpu-target",
                       tuning="vit-cpu",
                       data=dict(dataset="fashion-mnist", batch_size=32, eval_batches=2),
                       finetune_data=dict(dataset="fashion-mnist", batch_size=32, eval_batches=16)),
    # fine-tuning is judged on more of the validation split than GHN training evaluates
    "cpu": StudyScale(ghn="logah-cpu-grid-mf", space="vits-cpu", target="vit-cpu-target",
                      tuning="vit-cpu",
                      data=dict(dataset="fashion-mnist", batch_size=64, eval_batches=10),
                      finetune_data=dict(dataset="fashion-mnist", batch_size=64, eval_batches=40)),
    "paper": StudyScale(ghn="logah-t", space="vits-1k", target="vit-s", tuning="vit-paper",
                        data=dict(dataset="cifar100", batch_size=64, eval_batches=0),
                        ghn_settings=dict(steps=300 * _CIFAR_STEPS_PER_EPOCH, lr=3e-4,
                                          warmup_steps=5 * _CIFAR_STEPS_PER_EPOCH, meta_batch=1,
                                          checkpoint_every=5_000, log_every=100, ema_decay=0.0)),
}


class ViTFamily(ImageFamily):
    name = "vit"
    title = "ViT"
    arch_class = ViTArch
    space_class = ViTSpace
    default_dataset = "fashion-mnist"
    spaces = {"vits-1k": vits_1k, "vits-cpu": vits_cpu, "vits-cpu-deep": vits_cpu_deep}
    targets = TARGETS
    target_notes = TARGET_NOTES
    panels = PANELS
    finetune_presets = FINETUNE_PRESETS
    scales = SCALES
    classifier_names = ("heads.head.weight", "heads.head.bias")
    field_labels = {"num_layers": "depth (ViT layers)", "hidden_dim": "width (ViT hidden size)",
                    "num_heads": "ViT attention heads", "mlp_dim": "ViT MLP width",
                    "patch_size": "ViT patch size", "image_size": "ViT image size"}

    def build_model(self, arch, device="meta"):
        import torch
        from torchvision.models import VisionTransformer

        arch.validate()
        with torch.device(device):
            return VisionTransformer(image_size=arch.image_size, patch_size=arch.patch_size,
                                     num_layers=arch.num_layers, num_heads=arch.num_heads,
                                     hidden_dim=arch.hidden_dim, mlp_dim=arch.mlp_dim,
                                     num_classes=arch.num_classes)

    def module_rules(self):
        from torch import nn
        from torchvision.models.vision_transformer import Encoder, VisionTransformer

        linear = {"weight": (WEIGHT, False), "bias": (BIAS, False)}
        return [
            (nn.Linear, linear),
            (nn.Conv2d, linear),
            (nn.MultiheadAttention, {"in_proj_weight": (WEIGHT, False),
                                     "in_proj_bias": (BIAS, False)}),
            (nn.LayerNorm, {"weight": (NORM, False), "bias": (NORM, False)}),
            (Encoder, {"pos_embedding": (EMBEDDING, False)}),
            (VisionTransformer, {"class_token": (EMBEDDING, False)}),
        ]

    def attention_modules(self):
        from torch import nn

        return (nn.MultiheadAttention,)

    def attention_layers(self, model, arch):
        """torchvision's ``nn.MultiheadAttention`` stacks q, k and v in ``in_proj_weight``."""
        d = arch.hidden_dim
        layers = []
        for block in model.encoder.layers:
            attention = block.self_attention
            w = attention.in_proj_weight
            layers.append(AttentionWeights(q=w[:d], k=w[d:2 * d], v=w[2 * d:],
                                           o=attention.out_proj.weight, heads=arch.num_heads,
                                           kv_heads=arch.num_heads))
        return layers

    def novelties(self, arch, space):
        ratio = (f"MLP ratio {arch.mlp_dim / arch.hidden_dim:g} (space: {space.mlp_ratio:g})"
                 if arch.mlp_dim != space.mlp(arch.hidden_dim) else "")
        found = [novel("patch size", arch.patch_size, space.patch_sizes),
                 novel("image size", arch.image_size, (space.image_size,)), ratio,
                 *super().novelties(arch, space)]
        return [x for x in found if x]

    def extra_histograms(self, archs):
        return {"patch": [a.patch_size for a in archs]}


FAMILY = ViTFamily()

