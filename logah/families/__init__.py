"""Target families, registered in one place: a family is one module, listed here once.

    family = get_family("llama")           # or family_of(arch), or family_of_record(record)
    family.build_model(arch)               # everything family-specific goes through the spec

The registry answers the questions the rest of the package asks about targets: which family a
record, a space, a named target, a dataset kind belongs to; what a family's presets are. An
unknown family is one ``LogahError`` naming the known ones, everywhere; nothing falls back to a
default family. Tests iterate over ``FAMILIES``, so a family is tested by being registered.

To add a family: write ``logah/families/NAME.py`` (an architecture record, a space, targets,
presets, a ``TargetFamily`` subclass and its instance ``FAMILY``; see ``base`` and ``kinds``)
and add it to the tuple below.
"""

from __future__ import annotations

from logah.errors import LogahError
from logah.families import gpt2, llama, vit
from logah.families.base import IMAGE, TEXT, TargetArch, TargetFamily

FAMILIES: dict[str, TargetFamily] = {f.name: f for f in (vit.FAMILY, gpt2.FAMILY, llama.FAMILY)}


def get_family(name: str) -> TargetFamily:
    """The family called ``name``; anything else is one clear error."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise LogahError(f"unknown target family {name!r}: use one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(arch: TargetArch) -> TargetFamily:
    """The family of an architecture record (or of a space)."""
    return get_family(getattr(arch, "family", None))


def family_of_record(record) -> TargetFamily:
    """The family a JSON record (architecture or space) names in its ``family`` field."""
    if not isinstance(record, dict):
        raise LogahError(f"an architecture or space record must be a JSON object, "
                         f"got {type(record).__name__}")
    return get_family(record.get("family"))


def named_targets() -> dict[str, TargetArch]:
    """Every family's named targets."""
    return {name: arch for f in FAMILIES.values() for name, arch in f.targets.items()}


def target_notes() -> dict[str, str]:
    return {name: note for f in FAMILIES.values() for name, note in f.target_notes.items()}


def named_spaces() -> dict:
    """Every family's space presets: name -> factory."""
    return {name: make for f in FAMILIES.values() for name, make in f.spaces.items()}


def panels() -> dict[str, tuple[str, ...]]:
    """Every family's target panels: name -> target names."""
    return {name: targets for f in FAMILIES.values() for name, targets in f.panels.items()}


def finetune_presets() -> dict[str, dict]:
    return {name: settings for f in FAMILIES.values()
            for name, settings in f.finetune_presets.items()}


def families_of_kind(kind: str) -> list[TargetFamily]:
    """The families whose task reads ``kind`` data (``image`` or ``text``)."""
    return [f for f in FAMILIES.values() if f.data_kind == kind]


__all__ = ["FAMILIES", "IMAGE", "TEXT", "TargetArch", "TargetFamily", "families_of_kind", "family_of",
           "family_of_record", "finetune_presets", "get_family", "named_spaces", "named_targets",
           "panels", "target_notes"]
