"""Datasets and tokenizers behind one registry (docs/design.md §4): real data, offline first.

Images (``IMAGE_DATASETS``): ``fashion-mnist`` (offline, Debian package), ``digits`` (offline,
scikit-learn, for tests), ``cifar10-sample`` / ``cifar100-sample`` (offline, 20 real images from
the foolbox wheel), ``cifar10`` / ``cifar100`` (local copy or online). Text (``TEXT_DATASETS``):
``shakespeare`` and ``kjv`` (offline, split by works), ``wikitext-2`` / ``wikitext-103`` (local
copy, HF cache or online). Tokenizers: ``gpt2`` (exact, offline) and ``bpe`` (trained, cached).
An unknown name, or an online-only dataset with no network, raises ``LogahError`` at once.

    from logah.data import load_image_dataset, load_text_dataset, get_tokenizer
"""

from logah.data.images import IMAGE_DATASETS, ImageDataset, ImageDatasetInfo, load_image_dataset
from logah.data.paths import cache_dir, data_root, offline
from logah.data.text import TEXT_DATASETS, TextDatasetInfo, corpus_documents
from logah.data.token_blocks import TokenBlockDataset, load_text_dataset
from logah.data.tokenization import TOKENIZERS, get_tokenizer

__all__ = [
    "IMAGE_DATASETS", "ImageDataset", "ImageDatasetInfo", "load_image_dataset",
    "TEXT_DATASETS", "TextDatasetInfo", "TokenBlockDataset", "corpus_documents", "load_text_dataset",
    "TOKENIZERS", "get_tokenizer",
    "cache_dir", "data_root", "offline",
]
