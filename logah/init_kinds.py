"""The names of target initialisations, and how the paper's tables call them.

Kept apart from ``logah.inits`` (which builds models, with torch) so that reading a trial table
(``logah.analysis``) knows what an init name means without importing torch.
"""

from __future__ import annotations

BASELINE_INITS = ("random", "orthogonal")
GHN_INITS = {"ghn3": "tiled", "logah": "low-rank"}   # init name -> decoder of its checkpoint
INIT_KINDS = BASELINE_INITS + tuple(GHN_INITS)
PAPER_NAMES = {"random": "RandInit", "orthogonal": "OrthInit", "ghn3": "GHN-3", "logah": "LoGAH"}
