"""Named GHN configurations: the paper's (Table 1) and CPU-scale ones for laptops and tests.

Parameter counts of the paper presets match Table 1 within 1% (``tests/test_cli.py`` checks them;
docs/design.md §3.3).
GHN-3 presets count a 1000-class head, as GHN-3's released ImageNet models do: with it the
counts are 6.91M / 35.80M / 214.7M / 654.3M against the table's 6.9 / 35.8 / 214.7 / 654.4M
(with 100 classes GHN-3-T would have 6.79M, 1.6% short of the table).
"""

from __future__ import annotations

from logah.errors import LogahError
from logah.ghn import GHNConfig

K_PAPER = 2048 * 16

GHN_PRESETS: dict[str, GHNConfig] = {
    # paper, Table 1
    "logah-t": GHNConfig(decoder="low-rank", layers=3, hidden=64, heads=8, rank=32, max_width=K_PAPER),
    "logah-s": GHNConfig(decoder="low-rank", layers=5, hidden=128, heads=16, rank=90, max_width=K_PAPER),
    "logah-b": GHNConfig(decoder="low-rank", layers=5, hidden=256, heads=16, rank=128, max_width=K_PAPER),
    "logah-l": GHNConfig(decoder="low-rank", layers=12, hidden=256, heads=16, rank=256, max_width=K_PAPER),
    "ghn3-t": GHNConfig(decoder="tiled", layers=3, hidden=64, heads=8),
    "ghn3-s": GHNConfig(decoder="tiled", layers=5, hidden=128, heads=16),
    "ghn3-l": GHNConfig(decoder="tiled", layers=12, hidden=256, heads=16),
    "ghn3-xl": GHNConfig(decoder="tiled", layers=24, hidden=384, heads=16),
    # CPU scale: train in minutes on 2 cores. logah-cpu keeps the paper's K: with the reshape of
    # the low-rank decoder, a matrix of m rows reads ceil(m·r/K) rows of the decoder's intermediate,
    # and a smaller K makes wider targets read rows never trained (measured on vit-cpu-target
    # after 2000-3000 steps on vits-cpu: 10.2% test accuracy with K = 4096, 18.3% with K = 32768).
    "logah-cpu": GHNConfig(decoder="low-rank", layers=2, hidden=32, heads=4, rank=16, max_width=K_PAPER),
    # logah-cpu with rows read at relative unit positions (not the paper's; logah.decoders):
    # alone it helps GPT-2 (6 × 96 target perplexity 347 vs 1816) but leaves the 6 × 96 ViT target
    # at chance (10.1%); with mean-field scaling, below, both transfer (ghn_training.md)
    "logah-cpu-grid": GHNConfig(decoder="low-rank", layers=2, hidden=32, heads=4, rank=16,
                                max_width=K_PAPER, unit_grid=64),
    # logah-cpu-grid with mean-field weight scaling (logah.postprocess): a wider layer computes a
    # finer sampling of the same function; zero-shot on 6 × 96 ViTs 23-43% (3 seeds; chance 10%),
    # on the 6 × 96 GPT-2 perplexity 230 vs 4200 at random init (ghn_training.md)
    "logah-cpu-grid-mf": GHNConfig(decoder="low-rank", layers=2, hidden=32, heads=4, rank=16,
                                   max_width=K_PAPER, unit_grid=64, weight_scaling="mean-field"),
    "ghn3-cpu": GHNConfig(decoder="tiled", layers=2, hidden=32, heads=4, spatial=4, num_classes=10),
    "logah-test": GHNConfig(decoder="low-rank", layers=1, hidden=16, heads=2, rank=4, max_width=1024),
    "ghn3-test": GHNConfig(decoder="tiled", layers=1, hidden=16, heads=2, spatial=4, num_classes=10),
}

# Table 1 of the paper, in parameters, for the fidelity test and ``logah ghn-info``.
PAPER_PARAMS = {"logah-t": 2.5e6, "logah-s": 21.4e6, "logah-b": 78.2e6, "logah-l": 289.4e6,
                "ghn3-t": 6.9e6, "ghn3-s": 35.8e6, "ghn3-l": 214.7e6, "ghn3-xl": 654.4e6}


def get_preset(name: str) -> GHNConfig:
    if name not in GHN_PRESETS:
        raise LogahError(f"unknown GHN preset {name!r}: use one of {', '.join(GHN_PRESETS)}")
    return GHN_PRESETS[name]
