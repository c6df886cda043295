"""The names of target initialisations, and how the paper's tables call them.

The baselines need no GHN: the LoGAH paper's two (random, orthogonal) and two it leaves out, a
data-free one (``mimetic``: Trockman & Kolter, ICML 2023) and a one-batch one (``lsuv``:
Mishkin & Matas, ICLR 2016), named in tables as those papers name them.

Kept apart from ``logah.inits`` (which builds models, with torch) so that reading a trial table
(``logah.analysis``) knows what an init name means without importing torch.
"""

from __future__ import annotations

BASELINE_INITS = ("random", "orthogonal", "mimetic", "lsuv")   # need no GHN
GHN_INITS = {"ghn3": "tiled", "logah": "low-rank"}   # init name -> decoder of its checkpoint
INIT_KINDS = BASELINE_INITS + tuple(GHN_INITS)
# the baselines whose matrices complete a GHN prediction (``fill_init`` in ``logah.inits``)
FILL_INITS = ("random", "orthogonal")
# which parameters of a GHN init keep the prediction (``predicted_part`` in ``logah.inits``): the
# others take the ``fill_init`` init's values
PREDICTED_PARTS = ("all", "blocks", "outside_blocks")
PAPER_NAMES = {"random": "RandInit", "orthogonal": "OrthInit", "mimetic": "Mimetic", "lsuv": "LSUV",
               "ghn3": "GHN-3", "logah": "LoGAH"}
