"""What a GHN trained on one space and dataset means for the target it initialises.

A GHN is trained on a family of architectures (a space) and one dataset, and its checkpoint says
so (``trained_on`` in ``ghn.json``: family, space record, dataset, classifier width and, for
text, the tokenizer, whose files it keeps in ``tokenizer/``). Using it on anything else is a
*transfer* (docs/design.md §3.5, paper §5.4), and these rules decide what of the prediction is kept:

* **family**: a ViT GHN cannot initialise a GPT-2, nor the reverse: one clear error;
* **out of distribution**: a target with a patch size, head count, image size, MLP ratio,
  context length or embedding tying its space never had gets one warning naming each novelty
  (``TransferWarning``). A deeper or wider target gets none: generalising to larger targets is
  what the paper claims and what the CPU targets test;
* **tokenizer**: a text GHN's embedding and LM-head rows belong to its vocabulary, so a corpus
  is read with the GHN's own tokenizer by default (``DataConfig.tokenizer = "auto"`` resolves to
  it, ``resolve_data``), whatever the corpus; with another tokenizer those two matrices are
  re-initialised (library default) and a warning says so;
* **classifier**: an image target on another dataset than the GHN's gets its classifier
  re-initialised, as the paper does, unless the caller keeps it (``keep_classifier``, e.g. for
  two datasets with the same classes); a classifier of another width is always re-initialised.

Checkpoints written before these records existed have only the dataset and classifier width:
the family and space checks are skipped for them.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from logah.errors import LogahError
from logah.families import TEXT, family_of
from logah.targets import Arch

log = logging.getLogger(__name__)


class TransferWarning(UserWarning):
    """A GHN initialises a target unlike anything it was trained on, or part of its prediction is
    dropped (embeddings of another tokenizer)."""


@dataclass(frozen=True)
class TrainedOn:
    """What a GHN checkpoint was trained on (fields None where an older checkpoint lacks them)."""

    family: str | None = None
    space: dict | None = None
    dataset: str | None = None
    num_outputs: int | None = None
    tokenizer_name: str | None = None
    tokenizer_fingerprint: str | None = None
    tokenizer_dir: Path | None = None

    @classmethod
    def of(cls, ghn_path: str | Path) -> "TrainedOn":
        from logah.checkpoint import TOKENIZER_DIR, read_metadata

        record = read_metadata(ghn_path).object("trained_on")
        space = record.object("space")
        tokenizer = record.object("tokenizer")
        folder = Path(ghn_path) / TOKENIZER_DIR
        return cls(family=record.get("family", str) or space.get("family", str),
                   space=space.record or None,
                   dataset=record.get("dataset", str), num_outputs=record.get("num_outputs", int),
                   tokenizer_name=tokenizer.get("name", str),
                   tokenizer_fingerprint=tokenizer.get("fingerprint", str),
                   tokenizer_dir=folder if folder.is_dir() else None)

    def describe(self) -> str:
        space = (self.space or {}).get("name")
        return ", ".join(x for x in (self.family and f"{self.family} architectures",
                                     space and f"space {space}", self.dataset) if x)


def resolve_data(data, ghn: str | Path | None):
    """``data`` (a ``DataConfig``) with the ``auto`` tokenizer replaced by the tokenizer a text
    GHN was trained with, so every run that starts from that GHN reads its corpus with the
    vocabulary the GHN's embeddings belong to; unchanged otherwise."""
    if data.tokenizer != "auto" or ghn is None:
        return data
    from logah.checkpoint import is_checkpoint

    if not is_checkpoint(ghn):
        return data
    folder = TrainedOn.of(ghn).tokenizer_dir
    return dataclasses.replace(data, tokenizer=str(folder)) if folder is not None else data


def check_family(arch: Arch, trained: TrainedOn, ghn_path: str | Path) -> None:
    if trained.family is not None and trained.family != arch.family:
        raise LogahError(f"GHN {ghn_path} was trained on {trained.describe()}: it cannot "
                         f"initialise a {arch.family} target (train a GHN on a "
                         f"{arch.family} space)")


def novelties(arch: Arch, space_record: dict) -> list[str]:
    """What ``arch`` has that no architecture of the space has (empty when it is in range, or
    only deeper or wider); the family says what counts (``TargetFamily.novelties``)."""
    from logah.archs import space_from_dict

    return family_of(arch).novelties(arch, space_from_dict(space_record))


def check_target(arch: Arch, ghn_path: str | Path) -> TrainedOn:
    """Refuse a target of another family; warn once about what else is new to the GHN."""
    trained = TrainedOn.of(ghn_path)
    check_family(arch, trained, ghn_path)
    if trained.space is not None and trained.space.get("family") == arch.family:
        new = novelties(arch, trained.space)
        if new:
            warnings.warn(f"target is outside the training space of GHN {ghn_path} "
                          f"({trained.describe()}): {'; '.join(new)}", TransferWarning,
                          stacklevel=3)
    return trained


def reinitialised(arch: Arch, trained: TrainedOn, *, dataset: str | None = None, tokenizer=None,
                  keep_classifier: bool = False) -> tuple[str, ...]:
    """Names of the predicted parameters to replace by the library's default init when the GHN
    (``trained``) initialises ``arch`` for ``dataset`` read with ``tokenizer``."""
    family = family_of(arch)
    outputs = tuple(family.output_names(arch))
    if family.data_kind == TEXT:
        if tokenizer is not None and trained.tokenizer_fingerprint is not None:
            from logah.data.tokenization import tokenizer_fingerprint

            if tokenizer_fingerprint(tokenizer) != trained.tokenizer_fingerprint:
                warnings.warn(f"the text is read with tokenizer {tokenizer.name_or_path} "
                              f"({len(tokenizer)} tokens), not the GHN's "
                              f"({trained.tokenizer_name}): the embeddings and LM head are "
                              f"re-initialised, only the rest is predicted (leave the tokenizer "
                              f"at 'auto' to use the GHN's)", TransferWarning, stacklevel=3)
                return outputs
            return ()
        return outputs if _other_width(trained, family.num_outputs(arch)) else ()
    if _other_width(trained, family.num_outputs(arch)):
        return outputs
    if dataset is not None and trained.dataset is not None and dataset != trained.dataset:
        if keep_classifier:
            return ()
        log.info("classifier re-initialised: the GHN was trained on %s, the target is for %s",
                 trained.dataset, dataset)
        return outputs
    return ()


def _other_width(trained: TrainedOn, width: int) -> bool:
    return trained.num_outputs is not None and trained.num_outputs != width
