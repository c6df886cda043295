"""Rank sweep: how the rank r of LoGAH's low-rank decoder changes the quality of the
predicted-then-fine-tuned target (the paper's main ablation; ViT or GPT-2 targets).

    python studies/rank_sweep.py --preset smoke                 # minutes, 2 CPU cores
    python studies/rank_sweep.py --preset demo                  # under 5 minutes: rank 2 vs 16
    python studies/rank_sweep.py --preset cpu --task gpt2       # about two hours on 2 cores
    ray job submit --working-dir . -- python studies/rank_sweep.py --preset paper --gpu \\
        --storage /shared/studies                                 # a GPU cluster
"""

import sys

from logah.study import Choice, Study, main

STUDY = Study(
    name="rank_sweep",
    question="How does the rank of the low-rank decoder change the fine-tuned target's quality?",
    space={
        "smoke": {"ghn_training.ghn.rank": Choice(2, 8)},
        # make demo: two ranks far apart, two GHN seeds each, so the gap can be read against the spread
        "demo": {"ghn_training.ghn.rank": Choice(2, 16), "ghn_training.seed": Choice(0, 1)},
        "cpu": {"ghn_training.ghn.rank": Choice(2, 4, 8, 16, 32),
                "ghn_training.seed": Choice(0, 1, 2)},
        "paper": {"ghn_training.ghn.rank": Choice(32, 64, 90, 128, 256)},
    },
)

if __name__ == "__main__":
    sys.exit(main(STUDY))
