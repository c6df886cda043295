"""Architecture-sampling sweep: how the training space of the GHN (depth and width ranges, the
number of architectures, the parameter cap) and the meta-batch size m change the quality of the
predicted-then-fine-tuned target (paper Table 3 varies m; docs/design.md §3.4 the rest).

    python studies/arch_sampling_sweep.py --preset smoke
    python studies/arch_sampling_sweep.py --preset cpu --search tpe --num-samples 16
"""

import sys

from logah.study import Choice, Study, Variants, main

# Width bands (depth_min, depth_max, width_min, width_max, step) of the CPU spaces: the default
# (vits-cpu / gpts-cpu), narrower and wider; the targets are 6 x 96, outside all of them.
CPU_WIDTHS = Variants(
    narrow={"ghn_training.space.width_bands": [(1, 2, 32, 48, 8), (3, 4, 16, 32, 8)]},
    default={},
    wide={"ghn_training.space.width_bands": [(1, 2, 32, 80, 8), (3, 4, 16, 64, 8)]},
)
CPU_DEPTHS = Variants(
    shallow={"ghn_training.space.depth_max": 2,
             "ghn_training.space.width_bands": [(1, 2, 32, 64, 8)]},
    default={},
)

# parameter caps differ by family: language models are dominated by their 4096-token embeddings
CPU = {"ghn_training.space.num_archs": Choice(10, 100, 1000),
       "ghn_training.meta_batch": Choice(1, 2, 4), "widths": CPU_WIDTHS, "depths": CPU_DEPTHS}

STUDY = Study(
    name="arch_sampling_sweep",
    question="How do the GHN's training architectures and meta-batch size change the "
             "fine-tuned target's quality?",
    space={
        "smoke": {"ghn_training.space.num_archs": Choice(10, 100)},
        "cpu:vit": {**CPU, "ghn_training.space.max_params": Choice(50_000, 200_000)},
        "cpu:gpt2": {**CPU, "ghn_training.space.max_params": Choice(300_000, 1_000_000)},
        "cpu:llama": {**CPU, "ghn_training.space.max_params": Choice(300_000, 1_000_000)},
        "paper": {"ghn_training.space.num_archs": Choice(100, 1000, 10_000),
                  "ghn_training.meta_batch": Choice(1, 4, 8)},
    },
    search="tpe",
    num_samples={"smoke": 2, "cpu": 16, "paper": 9},
)

if __name__ == "__main__":
    sys.exit(main(STUDY))
