"""LoGAH: graph hypernetworks that predict all parameters of ViTs and GPT-2s.

Modules, in reading order: ``targets`` (architectures), ``graph`` (computational graphs),
``ghn`` (the hypernetwork) with ``decoders`` (low-rank and tiled), ``presets``,
``checkpoint``, ``predict``; ``archs`` and ``data`` (architecture spaces and datasets);
``tasks``, ``training`` (GHN training), ``inits`` and ``finetune`` (targets), ``trial`` (one
study trial), ``distributed`` (both loops on Ray Train); ``cli``.
"""

__version__ = "0.1.0"
