"""Hidden-size sweep: how the GHN's width d, depth L and heads H change the quality of the
predicted-then-fine-tuned target, at a fixed decoder rank.

    python studies/hidden_sweep.py --preset smoke
    python studies/hidden_sweep.py --preset cpu --search tpe --num-samples 12
"""

import sys

from logah.study import Choice, Study, main

STUDY = Study(
    name="hidden_sweep",
    question="How do the GHN's hidden size, layers and heads change the fine-tuned target's quality?",
    space={
        "smoke": {"ghn_training.ghn.hidden": Choice(16, 32)},
        "cpu": {"ghn_training.ghn.hidden": Choice(16, 32, 64),
                "ghn_training.ghn.layers": Choice(1, 2, 3),
                "ghn_training.ghn.heads": Choice(2, 4)},
        "paper": {"ghn_training.ghn.hidden": Choice(64, 128, 256),
                  "ghn_training.ghn.layers": Choice(3, 5, 12),
                  "ghn_training.ghn.heads": Choice(8, 16)},
    },
    search="grid",
)

if __name__ == "__main__":
    sys.exit(main(STUDY))
