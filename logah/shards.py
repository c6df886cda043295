"""Safetensors shards written tensor by tensor, so a model never has to be in memory at once.

A predicted Llama-3.1-8B is 32 GB in float32: more than a laptop holds, and more than the
prediction needs, since each tensor is computed on its own (``GHN.stream``). ``ShardWriter``
takes the list of tensors (names, shapes) before any is computed, plans shards of at most
``max_shard_bytes`` in that order, and writes each shard's header first; every tensor then goes
straight to disk as it is produced, whole or in row blocks, cast to the chosen ``dtype``. Peak
memory is one block, not the model.

The layout is Hugging Face's, which ``from_pretrained`` reads: one ``model.safetensors``, or
``model-00001-of-0000N.safetensors`` shards and ``model.safetensors.index.json`` (``weight_map``:
tensor name -> shard file). ``read_weights`` reads either back into a state dict (safetensors
only: nothing is unpickled).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from logah.errors import LogahError
from logah.io import Fields, dumps, read_json

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_SHARD_BYTES = 2 * 2**30
DTYPES: dict[str, tuple[torch.dtype, str]] = {
    "float32": (torch.float32, "F32"),
    "bfloat16": (torch.bfloat16, "BF16"),
    "float16": (torch.float16, "F16"),
}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a ``--dtype`` name."""
    if name not in DTYPES:
        raise LogahError(f"unknown dtype {name!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[name][0]


@dataclass(frozen=True)
class Entry:
    """One tensor to write: its name and stored shape."""

    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def shard_name(index: int, count: int) -> str:
    return SINGLE_FILE if count == 1 else f"model-{index + 1:05d}-of-{count:05d}.safetensors"


def plan_shards(entries: list[Entry], itemsize: int, max_shard_bytes: int) -> list[list[Entry]]:
    """Consecutive runs of ``entries`` of at most ``max_shard_bytes`` each (a larger tensor gets
    a shard of its own)."""
    shards: list[list[Entry]] = [[]]
    size = 0
    for entry in entries:
        nbytes = entry.numel * itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    return shards


def _header(entries: list[Entry], code: str, itemsize: int) -> bytes:
    """The safetensors header of a shard: JSON with each tensor's dtype, shape and byte range,
    padded with spaces to a multiple of 8 bytes."""
    offset, tensors = 0, {}
    for entry in entries:
        end = offset + entry.numel * itemsize
        tensors[entry.name] = {"dtype": code, "shape": list(entry.shape), "data_offsets": [offset, end]}
        offset = end
    text = json.dumps({"__metadata__": {"format": "pt"}, **tensors}, separators=(",", ":"))
    raw = text.encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


class ShardWriter:
    """Writes ``entries`` (in that order) into shards in ``folder``; call ``write`` once per
    entry, in order, then ``close``. ``bytes_written`` counts what reached the files."""

    def __init__(self, folder: Path, entries: Iterable[Entry], *, dtype: str = "float32",
                 max_shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.folder = Path(folder)
        self.dtype, code = torch_dtype(dtype), DTYPES[dtype][1]
        self.itemsize = torch.empty((), dtype=self.dtype).element_size()
        self.shards = plan_shards(list(entries), self.itemsize, max_shard_bytes)
        self.code = code
        self._queue = [(i, e) for i, shard in enumerate(self.shards) for e in shard]
        self._position = 0
        self._file: IO[bytes] | None = None
        self._open_shard = -1
        self.bytes_written = 0

    @property
    def entries(self) -> list[Entry]:
        return [e for _, e in self._queue]

    def _file_for(self, shard: int) -> IO[bytes]:
        if shard != self._open_shard:
            if self._file is not None:
                self._file.close()
            path = self.folder / shard_name(shard, len(self.shards))
            self._file = open(path, "wb")
            header = _header(self.shards[shard], self.code, self.itemsize)
            self._file.write(header)
            self.bytes_written += len(header)
            self._open_shard = shard
        assert self._file is not None
        return self._file

    def write(self, name: str, blocks: torch.Tensor | Iterable[torch.Tensor]) -> None:
        """The next entry's values: a tensor of its shape, or row blocks that together are one."""
        shard, entry = self._queue[self._position]
        assert name == entry.name, (name, entry.name)
        file = self._file_for(shard)
        expected, written = entry.numel * self.itemsize, 0
        for block in ([blocks] if isinstance(blocks, torch.Tensor) else blocks):
            data = block.detach().to(device="cpu", dtype=self.dtype).contiguous()
            raw = data.view(torch.uint8).numpy() if data.numel() else b""
            file.write(memoryview(raw))
            written += data.numel() * self.itemsize
        assert written == expected, (name, written, expected)
        self.bytes_written += written
        self._position += 1

    def close(self) -> None:
        """Finish the last shard and write the index (when there are several shards)."""
        assert self._position == len(self._queue), "not every tensor was written"
        if self._file is not None:
            self._file.close()
            self._file = None
        if len(self.shards) > 1:
            weight_map = {e.name: shard_name(i, len(self.shards)) for i, e in self._queue}
            total = sum(e.numel for e in self.entries) * self.itemsize
            text = dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
            (self.folder / INDEX_FILE).write_text(text + "\n")
            self.bytes_written += len(text) + 1


def write_state(folder: Path, state: dict[str, torch.Tensor], *, dtype: str = "float32",
                max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> int:
    """Write a state dict in memory as shards; returns the bytes written."""
    writer = ShardWriter(folder, [Entry(n, tuple(t.shape)) for n, t in state.items()],
                         dtype=dtype, max_shard_bytes=max_shard_bytes)
    for name, tensor in state.items():
        writer.write(name, tensor)
    writer.close()
    return writer.bytes_written


def shard_files(folder: Path) -> list[Path]:
    """The shard files of ``folder``: the index's, or the single file."""
    folder = Path(folder)
    index = folder / INDEX_FILE
    if index.is_file():
        weight_map = Fields(read_json(index, "safetensors index"), index).object("weight_map")
        names = sorted({weight_map.get(name, str, required=True) for name in weight_map.record})
        if any(Path(n).name != n for n in names):
            raise LogahError(f"{index}: shard names must be plain file names, got {names[:3]}")
        return [folder / n for n in names]
    return [folder / SINGLE_FILE]


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the shards in ``folder`` (a missing or corrupt shard is a ``LogahError``)."""
    state: dict[str, torch.Tensor] = {}
    for path in shard_files(folder):
        try:
            state.update(load_file(str(path)))
        except (FileNotFoundError, SafetensorError, OSError) as err:
            raise LogahError(f"{path}: missing or corrupt ({err})") from None
    return state
