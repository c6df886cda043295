"""Token blocks: each split of a corpus (``logah.data.text``) tokenised once (cached on disk
under ``<cache>/tokens``, keyed by the tokenizer and the text), works joined with
``<|endoftext|>``, and the stream cut into non-overlapping blocks of ``block_size``; the model
shifts labels itself (labels = inputs).

    >>> tok = get_tokenizer("bpe")
    >>> ds = load_text_dataset("shakespeare", "train", tokenizer=tok, block_size=128)
    >>> ds[0].shape
    torch.Size([128])
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset

from logah.data.paths import cache_dir
from logah.data.text import corpus_texts
from logah.data.tokenization import tokenizer_fingerprint
from logah.errors import LogahError
from logah.io import atomic_file

_TOKEN_CACHE_VERSION = 1


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the Rust tokenizer, batched, no offsets (3x faster), no length warnings
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [enc.ids for enc in encode(texts, add_special_tokens=False)]
    return [tokenizer.encode(t, add_special_tokens=False) for t in texts]


_TOKENS: dict[str, np.ndarray] = {}


def corpus_tokens(name: str, split: str, tokenizer) -> np.ndarray:
    """All token ids of a split (uint16 when the vocabulary allows, else int32), works joined by
    the tokenizer's end-of-text token. Cached in memory and on disk (keyed by a hash of the
    tokenizer and the text), so repeated trials skip tokenisation."""
    texts = corpus_texts(name, split)
    digest = hashlib.sha256(tokenizer_fingerprint(tokenizer).encode())
    for text in texts:  # the key covers the text too: a replaced local copy is never stale
        digest.update(text.encode("utf-8", "surrogatepass"))
    key = f"{name}-{split}-{digest.hexdigest()[:16]}-v{_TOKEN_CACHE_VERSION}"
    if key in _TOKENS:
        return _TOKENS[key]
    path = cache_dir() / "tokens" / f"{key}.npy"
    if path.exists():
        tokens = np.load(path)
    else:
        dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.int32
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        ids = _encode(tokenizer, texts)
        tokens = np.concatenate([np.asarray(doc + eos, dtype=dtype) for doc in ids])
        atomic_file(path, lambda tmp: np.save(tmp, tokens))
    _TOKENS[key] = tokens
    return tokens


class TokenBlockDataset(Dataset):
    """Non-overlapping ``block_size`` windows of a split's token stream, as LongTensor (block_size,).

    The tail shorter than a block is dropped. ``num_tokens`` counts the tokens in blocks.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, *, name: str, split: str,
                 vocab_size: int) -> None:
        self.name, self.split, self.block_size, self.vocab_size = name, split, block_size, vocab_size
        self.tokens = tokens
        self.num_blocks = len(tokens) // block_size
        self.num_tokens = self.num_blocks * block_size

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -self.num_blocks <= index < self.num_blocks:
            raise IndexError(f"block {index} out of range ({self.num_blocks} blocks)")
        start = (index % self.num_blocks) * self.block_size
        return torch.from_numpy(self.tokens[start:start + self.block_size].astype(np.int64))

    def batch(self, ids: list[int]) -> torch.Tensor:
        """Blocks ``ids`` as one (B, block_size) int64 batch, in one gather."""
        blocks = self.tokens[:self.num_tokens].reshape(self.num_blocks, self.block_size)
        return torch.from_numpy(blocks[np.asarray(ids, dtype=np.int64)].astype(np.int64))


def load_text_dataset(name: str, split: str, *, tokenizer, block_size: int) -> TokenBlockDataset:
    """Blocks of ``block_size`` token ids from ``split`` (``train``, ``val`` or ``test``) of corpus
    ``name``."""
    if not isinstance(block_size, int) or block_size <= 0:
        raise LogahError(f"block_size must be a positive integer, got {block_size!r}")
    tokens = corpus_tokens(name, split, tokenizer)
    if len(tokens) < block_size:
        raise LogahError(f"text dataset {name} ({split}) has {len(tokens)} tokens, fewer than one "
                         f"block of {block_size}")
    return TokenBlockDataset(tokens, block_size, name=name, split=split, vocab_size=len(tokenizer))
