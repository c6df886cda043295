"""GHN checkpoints: a folder with ``ghn.safetensors`` (weights) and ``ghn.json`` (config), and
for a GHN trained on text, ``tokenizer/`` (the vocabulary its embeddings and LM head belong to).

The JSON holds the full ``GHNConfig`` plus free-form metadata (what it was trained on, for how
long: ``logah.transfer`` reads it), so a checkpoint is self-describing: ``load_ghn(folder)``
rebuilds the exact network with no other input. Weights are read with safetensors, never
unpickled. A truncated file, a config that does not match the weights, or a folder that is
not a checkpoint gives a ``LogahError`` that says which.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from logah.devices import resolve_device
from logah.errors import LogahError
from logah.ghn import GHN, GHNConfig, build_ghn
from logah.io import Fields, atomic_dir, read_json, reading, write_json
from logah.presets import GHN_PRESETS, get_preset

WEIGHTS_FILE = "ghn.safetensors"
CONFIG_FILE = "ghn.json"
TOKENIZER_DIR = "tokenizer"
FORMAT = "logah-ghn/1"


def write_ghn_files(ghn: GHN, folder: Path, metadata: dict | None = None,
                    tokenizer=None) -> None:
    """Write the checkpoint files into an existing folder (used inside atomic writes); the
    config last, as its presence marks a complete checkpoint."""
    from logah.data.tokenization import save_tokenizer
    from logah.predict import check_finite

    if tokenizer is not None:
        (folder / TOKENIZER_DIR).mkdir(exist_ok=True)
        save_tokenizer(tokenizer, folder / TOKENIZER_DIR)
    state = {k: v.detach().contiguous().cpu() for k, v in ghn.state_dict().items()}
    check_finite(state, f"saving GHN {folder}")
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    write_json(folder / CONFIG_FILE, {"format": FORMAT, "config": ghn.config.to_dict(),
                                      "metadata": metadata or {}})


def save_ghn(ghn: GHN, path: str | Path, metadata: dict | None = None, *,
             overwrite: bool = False) -> Path:
    """Save a GHN checkpoint folder atomically."""
    with atomic_dir(path, overwrite=overwrite, marker=CONFIG_FILE) as tmp:
        write_ghn_files(ghn, tmp, metadata)
    return Path(path)


def is_checkpoint(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def _read_record(path: str | Path) -> Fields:
    """``ghn.json`` of a checkpoint folder, its fields checked: a LoGAH format, a ``config``
    object and a ``metadata`` object."""
    file = Path(path) / CONFIG_FILE
    record = Fields(read_json(file, "GHN checkpoint config"), file)
    if record.get("format", str) != FORMAT:
        raise LogahError(f"{file}: not a LoGAH GHN checkpoint "
                         f"(format {record.record.get('format')!r}, expected {FORMAT!r})")
    record.object("config")
    record.object("metadata")
    return record


def read_metadata(path: str | Path) -> Fields:
    """The free-form ``metadata`` of a checkpoint (what it was trained on), as typed fields."""
    return _read_record(path).object("metadata")


def read_config(path: str | Path) -> GHNConfig:
    """The ``GHNConfig`` of a checkpoint folder (its weights unread)."""
    record = _read_record(path)
    with reading(record.where):
        return GHNConfig.from_dict(record.get("config", dict, {}))


def load_ghn(path: str | Path, device: str | torch.device = "cpu") -> GHN:
    """Rebuild a GHN from a checkpoint folder."""
    path = Path(path)
    config = read_config(path)
    try:
        state = load_file(str(path / WEIGHTS_FILE), device=str(device))
    except FileNotFoundError:
        raise LogahError(f"GHN checkpoint {path}: {WEIGHTS_FILE} is missing") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise LogahError(f"GHN checkpoint {path}: {WEIGHTS_FILE} is corrupt or truncated ({err})") from None
    with torch.device("meta"):
        ghn = GHN(config)
    expected = {k: tuple(v.shape) for k, v in ghn.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))[:3]
        extra = sorted(set(found) - set(expected))[:3]
        wrong = [f"{k}: {found[k]} != {expected[k]}" for k in expected if k in found
                 and found[k] != expected[k]][:3]
        raise LogahError(f"GHN checkpoint {path}: weights do not match its config "
                         f"(missing {missing}, unexpected {extra}, wrong shapes {wrong})")
    from logah.predict import check_finite

    check_finite(state, f"GHN checkpoint {path}")   # NaN weights would predict NaN targets
    ghn.load_state_dict(state, assign=True)
    return ghn.eval()


def resolve_ghn(spec: str | Path, device: str | torch.device = "cpu", seed: int = 0) -> GHN:
    """A checkpoint folder, or a preset name (an untrained GHN of that preset, seeded)."""
    device = resolve_device(device)
    if Path(spec).is_dir():
        if not is_checkpoint(spec):
            raise LogahError(f"{spec} is not a GHN checkpoint folder (no {CONFIG_FILE})")
        return load_ghn(spec, device)
    if str(spec) in GHN_PRESETS:
        return build_ghn(get_preset(str(spec)), seed=seed).to(device).eval()
    raise LogahError(f"--ghn {str(spec)!r} is neither a checkpoint folder nor a preset "
                     f"({', '.join(GHN_PRESETS)})")
