"""LoGAH: graph hypernetworks that predict all parameters of ViTs and GPT-2s.

Modules, in reading order: ``targets`` (architectures), ``graph`` (computational graphs),
``ghn`` (the hypernetwork) with ``decoders`` (low-rank and tiled), ``presets``,
``checkpoint``, ``predict``; ``archs`` and ``data`` (architecture spaces and datasets);
``training`` and ``finetune``; ``cli``.
"""

__version__ = "0.1.0"
