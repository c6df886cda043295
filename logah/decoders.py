"""The two decoders a GHN can use: LoGAH's low-rank one and GHN-3's tiled one.

A decoder maps the GHN's embedding of one graph node (width d) to that node's parameters in
canonical (C_out, C_in, h, w) form (see ``logah.layout``), or for a task marked ``transposed``
directly in the (C_in, C_out) layout the module stores, so no copy is needed afterwards.
Both take a list of ``DecodeTask``s, group them by shape and compute the small factors of each
group with batched tensor ops; each full-size tensor is then one matrix product into its own
storage (so it can be saved as is).

Low-rank (LoGAH, arXiv 2405.16287 §3.1, App. B), exactly the paper's factorisation:

    P      = ReLU(MLP(h).view(2r, r))  MLP d → 4d → 8d → 2r², ReLU between layers
    X      = P · Uᵀ + u                U (K × r), u (K): one shared Linear(r → K); X is (2r × K)
    A, Bᵀ  = X.view(2K, r) split       a reshape, not a transpose: A (K × r), Bᵀ (K × r)
    W      = A[:m] · B[:, :n]          m = C_out·h, n = C_in·w; rank(W) ≤ r

Because of the reshape, A's first m rows only read the first ceil(m·r/K) rows of X, so we
compute just those (a few rows of K numbers per node instead of 2r). We first tried the "cleaner"
split-then-transpose (Aᵀ = P[:r]·Uᵀ): every weight matrix then shares the column space of U, the
whole target is confined to an r-dimensional subspace, and on Fashion-MNIST a GHN trained on a
single ViT reached loss 2.01 in 300 steps where the paper's reshape reached 0.89 (70% accuracy).

What the reshape implies: while m·r ≤ K, A's row k is U_k·p + u_k, where p is the first row of
P's half and U_k the k-th r × r block of U. The GHN chooses only p (r numbers per factor); the
per-unit blocks U_k are shared by every matrix. A target wider than every trained network uses
blocks that training only saw in other roles (MLP hidden units, qkv rows), and its zero-shot
quality drops (benchmarks/results/ghn_training.md).

``unit_grid`` = G > 0 (an option, not the paper's): a factor of n rows reads the first G rows at
relative positions t_k = (k + ½)·G/n − ½, linearly interpolated, so unit k of any width maps to
the same fraction of the grid and every grid row is trained by every width. Rows are convex
combinations of G rows, so rank(W) ≤ r still holds and widths above K need no pairing. The RMS
normalisation of a weight then uses the grid's Gram matrix, not the interpolated rows' (which have
a lower RMS when the grid is rough), so a matrix's scale does not depend on its width either.

Tensors wider than K (GPT-2's 50257-row embeddings with K = 32768, or any width above K): rows
(or columns) i ≥ K are (A[a] + A[b]) / √2, where (a, b) is a fixed pair of rows of A, distinct
for every extra row (a seeded permutation, shifted by one more position for every further block
of K). No row is a copy of another (unlike GHN-3 and the anchor LoGAH code, which tile the
matrix with period ``max_shape``), the rank bound still holds, and the extra rows cost no
parameters.

Tiled (GHN-3): Linear(d → 4d·s·s) + ReLU, per-pixel Linear(4d → 8d) + ReLU + Linear(8d → t·t),
giving a (t × t × s × s) chunk with t = ``tile`` (GHN-3's ``max_shape``, = d in its presets).
A target is cut from the chunk's centre pixel (2-D weights) or centre crop (convolutions), and
where it is larger than t in a channel dimension the chunk is *repeated* (the behaviour LoGAH
removes, kept here as the ablation baseline). 1-D tensors come from an MLP d → 2d → 2t (norm
weight and bias, or a bias), also repeated. The classifier (the graph's output node) maps the
chunk's output axis through Linear(t → num_classes), as GHN-3 does. Only the spatial positions a
target needs are computed, so a ViT costs one pixel per linear layer rather than s².
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class DecodeTask:
    """One node to decode: its row in the embedding matrix and the canonical shape wanted."""

    row: int
    shape: tuple[int, int, int, int]
    is_vector: bool = False        # 1-D parameters (bias, or a norm's weight+bias)
    norm_parts: int = 0            # a norm node: its vectors stacked (LayerNorm 2: weight then
                                   # bias; RMSNorm 1: weight); 0 for anything else
    is_output: bool = False        # the classifier / LM head (tiled decoder's class head)
    scale: float = 1.0             # multiplies the result; folded into a small factor, not the tensor
    normalize: bool = False        # rescale the raw matrix to unit RMS before ``scale`` (weights)
    transposed: bool = False       # return a 2-D weight as (C_in, C_out), its stored layout (HF Conv1D)
    identity_rows: bool = False    # rows are tokens, positions or classes, not width units


@dataclass(frozen=True)
class FactorGroup:
    """Low-rank factors of tasks decoded together: task ``tasks[j]`` is ``a[j] @ b[j]ᵀ`` with
    rows and columns in its canonical (C_out·h, C_in·w) order."""

    tasks: list[int]
    a: torch.Tensor                # (G, rows, r), scale folded in
    b: torch.Tensor                # (G, cols, r)
    shape: tuple[int, int, int, int]
    transposed: bool               # stored as (C_in, C_out): HF Conv1D

    def product(self, j: int) -> torch.Tensor:
        """Task j's tensor: (cols, rows) when stored transposed, else canonical 4-D."""
        c_out, c_in, h, w = self.shape
        if self.transposed:        # written once in the stored layout
            return self.b[j] @ self.a[j].t()
        return (self.a[j] @ self.b[j].t()).view(c_out, h, c_in, w).permute(0, 2, 1, 3)

    def stored_factors(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(left, right) with task j's 2-D stored tensor equal to left @ rightᵀ."""
        return (self.b[j], self.a[j]) if self.transposed else (self.a[j], self.b[j])


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _mean_gram(rows: torch.Tensor) -> torch.Tensor:
    """(G, n, r) -> (G, r, r): RᵀR / n, the mean outer product of the rows."""
    return rows.transpose(1, 2) @ rows / rows.shape[1]


def _group(tasks: list[DecodeTask], key) -> dict:
    groups: dict = {}
    for i, task in enumerate(tasks):
        groups.setdefault(key(task), []).append(i)
    return groups


class LowRankDecoder(nn.Module):
    """LoGAH's decoder: every predicted matrix is A·B with inner dimension ``rank``."""

    def __init__(self, hidden: int, rank: int, max_width: int, unit_grid: int = 0):
        super().__init__()
        self.rank, self.max_width, self.unit_grid = rank, max_width, unit_grid
        self.mlp = _mlp([hidden, 4 * hidden, 8 * hidden, 2 * rank * rank])
        self.basis = nn.Linear(rank, max_width)   # U, u: rows of A and columns of B
        self._pairs: dict[int, torch.Tensor] = {}

    def _extra_pairs(self, n: int) -> torch.Tensor:
        """(2, n - K) fixed pairs of rows combined into rows K..n-1 (see the module docstring)."""
        if n not in self._pairs:
            k = self.max_width
            perm = torch.randperm(k, generator=torch.Generator().manual_seed(k))
            j = torch.arange(n - k)
            shift = 1 + j // k    # distinct unordered pairs for up to k·(k/2 - 1) extra rows
            self._pairs[n] = torch.stack([perm[j % k], perm[(j % k + shift) % k]])
        return self._pairs[n]

    def _factor(self, p: torch.Tensor, n: int, units: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The n rows of a factor read from P-half ``p`` (G, r, r): (G, n, r), and the rows its
        RMS normalisation is measured on. Rows that are width ``units`` are read from the unit
        grid when there is one, and are measured on the grid, so the normalisation is the same at
        every width (interpolating rough rows lowers their RMS)."""
        if not (self.unit_grid and units):
            rows = self._rows(p, n)
            return rows, rows
        grid = self._rows(p, self.unit_grid)                    # (G, g, r)
        pos = ((torch.arange(n, device=p.device) + 0.5) * self.unit_grid / n - 0.5)
        pos = pos.clamp(0, self.unit_grid - 1)
        lo = pos.floor().long()
        hi = (lo + 1).clamp(max=self.unit_grid - 1)
        w = (pos - lo)[None, :, None]
        return grid[:, lo] * (1 - w) + grid[:, hi] * w, grid

    def _rows(self, p: torch.Tensor, n: int) -> torch.Tensor:
        """First n rows of the (K × r) factor read from P-half ``p`` (G, r, r): (G, n, r)."""
        r, k = self.rank, self.max_width
        m = min(n, k)
        x = p[:, :-(-m * r // k)] @ self.basis.weight.t() + self.basis.bias    # (G, ≤r, K)
        factor = x.reshape(len(p), -1)[:, :m * r].view(len(p), m, r)
        if n > k:
            a, b = self._extra_pairs(n).to(p.device)
            factor = torch.cat([factor, (factor[:, a] + factor[:, b]) / math.sqrt(2)], 1)
        return factor

    @staticmethod
    def groups(tasks: list[DecodeTask]) -> dict:
        """Tasks decoded together (same shape and treatment), in the order they are decoded."""
        return _group(tasks, lambda t: (t.shape, t.transposed, t.normalize, t.identity_rows))

    def factor_groups(self, embeddings: torch.Tensor, tasks: list[DecodeTask]) -> Iterator[FactorGroup]:
        """Each group's factors, one group at a time: every task's tensor is ``A[j] @ B[j]ᵀ``
        with its scale (and normalisation) folded into A."""
        r = self.rank
        halves = F.relu(self.mlp(embeddings).view(-1, 2, r, r))       # (V, 2, r, r)
        for (shape, transposed, normalize, identity_rows), idx in self.groups(tasks).items():
            c_out, c_in, h, w = shape
            rows, cols = c_out * h, c_in * w
            p = halves[[tasks[i].row for i in idx]]                   # (G, 2, r, r)
            a, a_measured = self._factor(p[:, 0], rows, units=not identity_rows)  # (G, rows, r)
            b, b_measured = self._factor(p[:, 1], cols)                           # (G, cols, r)
            scales = torch.tensor([tasks[i].scale for i in idx], device=p.device)
            if normalize:   # ‖ABᵀ‖²_F / (rows·cols) = Σ (AᵀA/rows) ⊙ (BᵀB/cols): r × r work
                mean_square = (_mean_gram(a_measured) * _mean_gram(b_measured)).sum((1, 2))
                scales = scales * torch.rsqrt(mean_square + 1e-12)
            yield FactorGroup(idx, a * scales[:, None, None], b, shape, transposed)

    def forward(self, embeddings: torch.Tensor, tasks: list[DecodeTask]) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(tasks)
        for group in self.factor_groups(embeddings, tasks):
            for j, i in enumerate(group.tasks):   # one product per node: each owns its storage
                out[i] = group.product(j)
        return out  # type: ignore[return-value]


class TiledDecoder(nn.Module):
    """GHN-3's decoder: a fixed (tile × tile × s × s) chunk, sliced or repeated to each tensor."""

    def __init__(self, hidden: int, tile: int, spatial: int, num_classes: int):
        super().__init__()
        self.tile, self.spatial, self.num_classes = tile, spatial, num_classes
        self.fc = nn.Linear(hidden, 4 * hidden * spatial * spatial)
        self.pixel_mlp = _mlp([4 * hidden, 8 * hidden, tile * tile])
        self.vector_mlp = _mlp([hidden, 2 * hidden, 2 * tile])
        self.class_head = nn.Linear(tile, num_classes)
        self.class_bias = nn.Sequential(nn.ReLU(), nn.Linear(tile, num_classes))

    def _pixels(self, embeddings: torch.Tensor, size: int) -> torch.Tensor:
        """The centre ``size × size`` window of the chunk: (V, t, t, size, size)."""
        s, h4 = self.spatial, self.fc.out_features // (self.spatial * self.spatial)
        crop = min(size, s)
        lo = (s - crop) // 2
        weight = self.fc.weight.view(h4, s, s, -1)[:, lo:lo + crop, lo:lo + crop]
        bias = self.fc.bias.view(h4, s, s)[:, lo:lo + crop, lo:lo + crop]
        x = F.relu(torch.einsum("vd,cyxd->vyxc", embeddings, weight) + bias.permute(1, 2, 0))
        chunk = self.pixel_mlp(x).view(*x.shape[:3], self.tile, self.tile)
        chunk = chunk.permute(0, 3, 4, 1, 2)                            # (V, t, t, crop, crop)
        if crop < size:  # kernels larger than the chunk: upsample, as GHN-3 does
            v = chunk.shape[0]
            chunk = F.interpolate(chunk.reshape(v, -1, crop, crop), size=(size, size),
                                  mode="bilinear", align_corners=False)
            chunk = chunk.view(v, self.tile, self.tile, size, size)
        return chunk

    @staticmethod
    def _fit(x: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        """Repeat ``x`` along each leading dim until it covers ``sizes``, then slice."""
        reps = [math.ceil(n / m) for n, m in zip(sizes, x.shape)]
        reps += [1] * (x.dim() - len(reps))
        x = x.repeat(*reps)
        return x[tuple(slice(0, n) for n in sizes)]

    def forward(self, embeddings: torch.Tensor, tasks: list[DecodeTask]) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(tasks)
        vec_idx = [i for i, t in enumerate(tasks) if t.is_vector]
        if vec_idx:
            vecs = self.vector_mlp(embeddings[[tasks[i].row for i in vec_idx]]).view(-1, 2, self.tile)
            for j, i in enumerate(vec_idx):
                task = tasks[i]
                if task.norm_parts:
                    c = task.shape[0] // task.norm_parts
                    value = self._fit(vecs[j], (task.norm_parts, c)).reshape(-1)
                elif task.is_output:
                    value = self._fit(self.class_bias(vecs[j, 0]), (task.shape[0],))
                else:
                    value = self._fit(vecs[j, 0], (task.shape[0],))
                out[i] = value.view(task.shape)
        mat_idx = [i for i, t in enumerate(tasks) if not t.is_vector]
        for size, idx in _group([tasks[i] for i in mat_idx], lambda t: max(t.shape[2:])).items():
            idx = [mat_idx[i] for i in idx]
            chunks = self._pixels(embeddings[[tasks[i].row for i in idx]], size)
            for j, i in enumerate(idx):
                c_out, c_in, h, w = tasks[i].shape
                lo_h, lo_w = (size - h) // 2, (size - w) // 2
                chunk = chunks[j][:, :, lo_h:lo_h + h, lo_w:lo_w + w]
                if tasks[i].is_output:
                    chunk = self.class_head(chunk.permute(1, 2, 3, 0)).permute(3, 0, 1, 2)
                if tasks[i].normalize:   # the repeated chunk has (nearly) the RMS of the tensor
                    chunk = chunk * torch.rsqrt(chunk.pow(2).mean() + 1e-12)
                chunk = chunk * tasks[i].scale   # after the normalisation, which would undo it
                value = self._fit(chunk, (c_out, c_in))
                out[i] = value[:, :, 0, 0].t() if tasks[i].transposed else value
        return out  # type: ignore[return-value]
