"""Decoder ablation: LoGAH's low-rank decoder against GHN-3's tiled one, at matched GHN size
(the tiled GHN's hidden size is chosen so that both have nearly the same parameter count), each
initialising and fine-tuning the same target over several seeds.

    python studies/decoder_ablation.py --preset smoke
    python studies/decoder_ablation.py --preset cpu --task gpt2
"""

import sys

from logah.study import Choice, Study, Variants, main

# logah-cpu 0.80M vs ghn3-cpu at hidden 40 0.79M; logah-t 2.54M vs ghn3-t at hidden 40 2.46M
# (``logah ghn-info``; counted with the decoders' 10-class head for the CPU pair)
CPU_DECODERS = Variants(
    low_rank={"ghn_training.ghn": "logah-cpu-grid-mf", "finetune.init": "logah"},
    tiled={"ghn_training.ghn": "ghn3-cpu", "ghn_training.ghn.hidden": 40, "finetune.init": "ghn3"},
)
PAPER_DECODERS = Variants(
    low_rank={"ghn_training.ghn": "logah-t", "finetune.init": "logah"},
    tiled={"ghn_training.ghn": "ghn3-t", "ghn_training.ghn.hidden": 40, "finetune.init": "ghn3"},
)

STUDY = Study(
    name="decoder_ablation",
    question="Low-rank (LoGAH) or tiled (GHN-3) decoder: which initialises the target better at "
             "the same GHN size?",
    space={
        "smoke": {"decoder": CPU_DECODERS},
        "cpu": {"decoder": CPU_DECODERS, "ghn_training.seed": Choice(0, 1, 2)},
        "paper": {"decoder": PAPER_DECODERS, "ghn_training.seed": Choice(0, 1, 2)},
    },
)

if __name__ == "__main__":
    sys.exit(main(STUDY))
