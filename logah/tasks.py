"""What a target network is trained and evaluated on: image classification or language modelling.

A task owns its data (a rank's shard of the training split and a validation split), produces the
mini-batch for a given step, computes the loss from logits, and evaluates a forward function.
GHN training and fine-tuning share it, so both read data the same way. ``task.fit(arch)`` sizes
an architecture's outputs for the data (the classifier to the dataset's classes, the vocabulary to
the tokenizer's), and both fit every architecture they train, so a space or target record never
has to match the data by hand.

Batches come through ``torch.utils.data.DataLoader`` and are a pure function of (seed, rank,
world size, step) (``logah.data.loading``): nothing about the data position needs to be saved in
a checkpoint beyond the step, and every rank reads a different shard (the anchor code gives every
rank the same data). Augmentation of a batch is seeded from its step as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from logah.data import (IMAGE_DATASETS, TEXT_DATASETS, corpus_documents, get_tokenizer,
                        load_image_dataset, load_text_dataset)
from logah.data.loading import StepSampler, batch_loader, evaluation_keys
from logah.errors import LogahError
from logah.families import IMAGE, TEXT, family_of, families_of_kind
from logah.io import NON_NEGATIVE, POSITIVE, ConfigRecord, Interval
from logah.seeds import step_seed
from logah.targets import Arch

ForwardFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class DataConfig(ConfigRecord):
    """Which data a task reads and how much per step."""

    record_name = "data config"

    dataset: str = "fashion-mnist"   # an image or text dataset of ``logah.data``
    batch_size: int = 64             # images, or token blocks, per step and rank
    block_size: int = 128            # tokens per block (text)
    tokenizer: str = "auto"          # text: auto, bpe, bpe:CORPUS, gpt2, a folder (text_tokenizer)
    vocab_size: int = 4096           # size of the trained BPE vocabulary
    augment: bool = False            # random crops/flips of training images
    eval_split: str = "val"          # "val" (held out from train) or "test"
    eval_batches: int = 10           # batches per evaluation (0: the whole split)

    bounds = {"batch_size": POSITIVE, "block_size": Interval(2), "vocab_size": POSITIVE,
              "eval_batches": NON_NEGATIVE}


class _Task:
    """Shared batching: the training split through a step-indexed ``DataLoader``
    (``logah.data.loading``), the evaluation split in order. A subclass builds a batch from
    dataset indices (``make_batch``) and scores one (``score``)."""

    metric: str
    mode: str

    def __init__(self, train, val, data: DataConfig, *, seed: int, rank: int, world_size: int):
        if len(train) < data.batch_size * world_size:
            raise LogahError(f"dataset {data.dataset}: {len(train)} training items, fewer than one "
                             f"batch of {data.batch_size} per rank for {world_size} rank(s)")
        self.train, self.val, self.data = train, val, data
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.sampler = StepSampler(len(train), data.batch_size, rank=rank, world_size=world_size,
                                   seed=seed)

    def train_sampler(self, start: int, end: int | None) -> StepSampler:
        return StepSampler(len(self.train), self.data.batch_size, rank=self.rank,
                           world_size=self.world_size, seed=self.seed, start=start, end=end)

    @property
    def batches_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch

    def sample_ids(self, step: int) -> list[int]:
        """Dataset indices of this rank's batch at ``step`` (exposed for tests and logs)."""
        return self.sampler.indices(step)

    def batch(self, step: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's training batch at ``step``, on ``device`` (random access: the loop reads
        batches in order through ``train_batches``)."""
        x, y = self.make_batch(self.train, step, self.sample_ids(step))
        return x.to(device), y.to(device)

    def train_batches(self, start: int, end: int | None, device) -> Iterator[tuple]:
        """This rank's training batches for steps ``start .. end - 1``, in order, on ``device``."""
        loader = batch_loader(lambda step, ids: self.make_batch(self.train, step, ids),
                              self.train_sampler(start, end), torch.device(device))
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def eval_batches(self, device) -> Iterator[tuple]:
        """The evaluation split in order, ``data.eval_batches`` batches of it (0: all)."""
        keys = evaluation_keys(len(self.val), self.data.batch_size, self.data.eval_batches)
        loader = batch_loader(lambda step, ids: self.make_batch(self.val, step, ids), keys,
                              torch.device(device))
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def make_batch(self, dataset, step: int, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of the items ``ids`` of ``dataset``; ``step`` seeds any
        augmentation (-1: none)."""
        raise AssertionError(f"{type(self).__name__} must define make_batch")


class ImageClassification(_Task):
    metric, mode = "accuracy", "max"

    def __init__(self, arch: Arch, data: DataConfig, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.data = data
        self.check(arch)
        channels = family_of(arch).in_channels
        train = load_image_dataset(data.dataset, "train", image_size=arch.image_size,
                                   channels=channels, augment=data.augment)
        val = load_image_dataset(data.dataset, data.eval_split, image_size=arch.image_size,
                                 channels=channels)
        super().__init__(train, val, data, seed=seed, rank=rank, world_size=world_size)
        self.num_classes = train.num_classes

    @property
    def num_outputs(self) -> int:
        """Width of the classifier the data needs (what a transfer compares)."""
        return self.num_classes

    def fit(self, arch: Arch) -> Arch:
        """``arch`` with the classifier this dataset needs (its image size is resampled to)."""
        self.check(arch)
        return family_of(arch).with_outputs(arch, self.num_classes)

    def check(self, arch: Arch) -> None:
        if family_of(arch).data_kind != IMAGE:
            raise LogahError(f"dataset {self.data.dataset} is an image dataset; target is {arch.family}")

    def make_batch(self, dataset, step, ids):
        seed = None if step < 0 else step_seed(self.seed, self.rank, step)
        return dataset.batch(ids, augment_seed=seed)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y)

    @torch.no_grad()
    def evaluate(self, forward: ForwardFn, device) -> dict[str, float]:
        correct = total = 0
        loss_sum = 0.0
        for x, y in self.eval_batches(device):
            logits = forward(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(-1) == y).sum().item()
            total += len(y)
        return {"accuracy": correct / total, "loss": loss_sum / total}


class LanguageModeling(_Task):
    metric, mode = "perplexity", "min"

    def __init__(self, arch: Arch, data: DataConfig, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.data = data
        self.check(arch)      # before the tokenizer and the corpus are loaded
        self.tokenizer = tokenizer = text_tokenizer(data)
        train = load_text_dataset(data.dataset, "train", tokenizer=tokenizer, block_size=data.block_size)
        val = load_text_dataset(data.dataset, data.eval_split, tokenizer=tokenizer,
                                block_size=data.block_size)
        super().__init__(train, val, data, seed=seed, rank=rank, world_size=world_size)
        self.vocab_size = len(tokenizer)

    @property
    def num_outputs(self) -> int:
        return self.vocab_size

    def fit(self, arch: Arch) -> Arch:
        """``arch`` with the vocabulary of this task's tokenizer (embedding and LM head rows),
        so no row is wasted on a token the data never holds and every token has one."""
        self.check(arch)
        return family_of(arch).with_outputs(arch, self.vocab_size)

    def check(self, arch: Arch) -> None:
        family = family_of(arch)
        if family.data_kind != TEXT:
            raise LogahError(f"dataset {self.data.dataset} is a text dataset; target is {arch.family}")
        if self.data.block_size > family.context_length(arch):
            raise LogahError(f"block_size={self.data.block_size} exceeds the context of the "
                             f"{arch.family} target ({family.context_field}="
                             f"{family.context_length(arch)})")

    def make_batch(self, dataset, step, ids):
        x = dataset.batch(ids)
        return x, x                     # the model shifts the labels itself

    def loss(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())

    @torch.no_grad()
    def evaluate(self, forward: ForwardFn, device) -> dict[str, float]:
        losses = [self.loss(forward(x), x).item() for x, _ in self.eval_batches(device)]
        loss = sum(losses) / len(losses)
        return {"perplexity": math.exp(min(loss, 50.0)), "loss": loss}


Task = ImageClassification | LanguageModeling


def text_tokenizer(data: DataConfig):
    """The tokenizer ``data`` names: ``auto`` and ``bpe`` are the BPE trained on the corpus
    itself (a run that starts from a text GHN has ``auto`` resolved to the GHN's own tokenizer
    first, ``logah.transfer``), ``bpe:CORPUS`` the one trained on another corpus, ``gpt2`` the
    real GPT-2 BPE, a folder a saved tokenizer."""
    name = "bpe" if data.tokenizer == "auto" else data.tokenizer
    return get_tokenizer(name, corpus=data.dataset, vocab_size=data.vocab_size)


_DATASETS = {IMAGE: IMAGE_DATASETS, TEXT: TEXT_DATASETS}
_KIND_WORDS = {IMAGE: "an image dataset", TEXT: "a text corpus"}


def dataset_kind(dataset: str) -> str | None:
    """``image`` for an image dataset, ``text`` for a text corpus, None for an unknown name."""
    return next((kind for kind, names in _DATASETS.items() if dataset in names), None)


def check_dataset_kind(arch: Arch, dataset: str) -> None:
    """A ViT needs an image dataset and a language model a corpus: say so, rather than
    'unknown image dataset', when a name of the other kind is given."""
    kind, needed = dataset_kind(dataset), family_of(arch).data_kind
    if kind is not None and kind != needed:
        raise LogahError(f"dataset {dataset} is {_KIND_WORDS[kind]}, but a {arch.family} target "
                         f"needs {_KIND_WORDS[needed]}: one of "
                         f"{', '.join(sorted(_DATASETS[needed]))}")


def check_dataset(name: str) -> None:
    """``name`` is a dataset this machine can read now (its files are there, or the network
    is): a ``LogahError`` that says how to get it otherwise. Reading is cached per process."""
    kind = dataset_kind(name)
    if kind is None:
        known = sorted([*IMAGE_DATASETS, *TEXT_DATASETS])
        raise LogahError(f"unknown dataset {name!r}: use one of {', '.join(known)}")
    if kind == IMAGE:
        IMAGE_DATASETS[name].load()
    else:
        corpus_documents(name, "train")


def default_dataset(kind: str) -> str:
    """The offline dataset a command reads when none is named."""
    return families_of_kind(kind)[0].default_dataset


TASKS = {IMAGE: ImageClassification, TEXT: LanguageModeling}


def make_task(arch: Arch, data: DataConfig, *, seed: int = 0, rank: int = 0,
              world_size: int = 1) -> Task:
    """The task that trains ``arch`` (any member of a space) on ``data.dataset``."""
    check_dataset_kind(arch, data.dataset)
    task = TASKS[family_of(arch).data_kind]
    return task(arch, data, seed=seed, rank=rank, world_size=world_size)
