"""The graph hypernetwork: node features → Graphormer → decoder → every parameter of a target.

One ``GHN`` class serves LoGAH and GHN-3; ``GHNConfig.decoder`` picks the decoder
(``logah.decoders``), so ablations differ in that part only.

    graphs = [graph_of(arch) for arch in archs]
    params = ghn(graphs)          # list of {parameter name: tensor}, differentiable w.r.t. the GHN
    logits = functional_call(model, params[0], (x,))

Node features (GHN-3): an embedding of the op type plus a shape embedding, where the canonical
4-D shape (C_out, C_in, h, w) is looked up entry by entry (a channel table for C_out and C_in, a
spatial table for h and w, each d/4 wide) and the four lookups are concatenated.

Backbone (Graphormer, pre-LN, MLP ratio 4, GELU, no qkv bias). The first layer adds in- and
out-degree embeddings (real edges, clipped at 100) and an embedding of the distance from the
input node (with no virtual-edge cutoff, see ``logah.graph``; clipped at 1000; see "Depth
encoding" below); an additive
attention bias per head is computed once from the forward and backward virtual-edge distances
(each embedded, concatenated, MLP 2d → d → heads) and reused by every layer. Graphs of
different sizes are padded and masked *per graph*: each graph's attention sees only its own
nodes, and the decoder works row by row, so a network's prediction does not depend on the other
networks in the meta-batch (the anchor code indexes dense embeddings with sparse offsets and
gets this wrong).

Depth encoding (``GHNConfig.depth_encoding``). ``absolute``, GHN-3's and the paper's: node i
reads row d_i of the distance table, d_i its distance from the input. A GHN trained on networks
of depth ≤ 4 has trained the rows up to the deepest such network's output only; the later
blocks of a deeper target read rows no training step moved. ``relative`` (not in the paper):
node i reads row round(255 · d_i / max_j d_j) of a 256-row table, its position between the
input (0) and the graph's deepest node (255), so the first block, the middle one and the last
read the same rows at every depth, and a deeper target asks only for positions the training
networks covered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from logah.decoders import DecodeTask, LowRankDecoder, TiledDecoder
from logah.errors import LogahError
from logah.graph import DEFAULT_EDGE_CUTOFF, PRIMITIVES, Graph
from logah.io import NON_NEGATIVE, POSITIVE, ConfigRecord
from logah.layout import EMBEDDING, NORM, WEIGHT, ParamSpec, node_canonical, split_node
from logah.postprocess import embedding_factor, postprocess, weight_scale

MAX_DEGREE = 100
MAX_INPUT_DISTANCE = 1000
DISTANCE_TABLE = 257         # distance embeddings cover 0..255 plus "no virtual edge"
RELATIVE_DEPTH_ROWS = 256    # depth_encoding "relative": positions 0..255 from input to deepest

# Channel sizes the shape encoder knows; others map to the nearest entry. Covers RGB/grey inputs,
# common class counts, every multiple of 8 up to 56, of 16 up to 4080, of 32 up to 8192, and the
# GPT-2 / Llama vocabulary sizes.
CHANNEL_VALUES = np.array(sorted({1, 2, 3, 10, 100, 1000, *range(8, 57, 8), *range(64, 4081, 16),
                                  *range(4096, 8193, 32), 32000, 50257, 128256}))
SPATIAL_VALUES = 32          # spatial sizes 1..32 (larger map to 32)


@dataclass(frozen=True, kw_only=True)
class GHNConfig(ConfigRecord):
    """Everything needed to rebuild a GHN; stored as JSON beside its weights."""

    record_name = "GHN config"

    decoder: Literal["low-rank", "tiled"] = "low-rank"
    hidden: int = 64                 # d: width of node embeddings
    layers: int = 3                  # L: Graphormer layers
    heads: int = 8                   # H: attention heads
    rank: int = 32                   # r: low-rank decoder rank
    max_width: int = 2048 * 16       # K: low-rank rows/columns predicted without reuse
    unit_grid: int = 0               # low-rank: 0 = the paper's per-unit rows; G > 0 = rows read at
                                     # relative positions of a G-row grid (logah.decoders)
    tile: int = 0                    # tiled decoder chunk width (GHN-3 max_shape); 0 means = hidden
    spatial: int = 16                # tiled decoder chunk spatial size s
    num_classes: int = 1000          # tiled decoder class head
    edge_cutoff: int = DEFAULT_EDGE_CUTOFF   # virtual-edge cutoff of the graphs it reads
    weight_beta: float = 2.0         # fan-in scaling of predicted weights
    weight_scaling: Literal["fan-in", "mean-field"] = "fan-in"   # sqrt(β/fan_in) (He, the paper's)
                                     # or sqrt(β·G)/fan_in, G = unit_grid (logah.postprocess)
    depth_encoding: Literal["absolute", "relative"] = "absolute"   # distance from the input as
                                     # is (GHN-3's) or relative to the graph's depth (module doc)

    bounds = {"weight_beta": POSITIVE, "tile": NON_NEGATIVE, "unit_grid": NON_NEGATIVE}

    def validate(self) -> None:
        super().validate()     # every number finite and in ``bounds``
        if self.decoder not in ("low-rank", "tiled"):
            raise LogahError(f"GHN decoder must be 'low-rank' or 'tiled', got {self.decoder!r}")
        for name in ("hidden", "layers", "heads", "rank", "max_width", "spatial", "num_classes",
                     "edge_cutoff"):
            if getattr(self, name) <= 0:
                raise LogahError(f"GHN {name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.unit_grid * self.rank <= self.max_width:
            raise LogahError(f"GHN unit_grid must be in [0, max_width / rank], got {self.unit_grid}")
        if self.weight_scaling not in ("fan-in", "mean-field"):
            raise LogahError(f"GHN weight_scaling must be 'fan-in' or 'mean-field', "
                             f"got {self.weight_scaling!r}")
        if self.weight_scaling == "mean-field" and not (self.decoder == "low-rank" and self.unit_grid):
            raise LogahError("GHN weight_scaling 'mean-field' needs the low-rank decoder with a "
                             "unit_grid: the grid width is the width at which it equals He's")
        if self.depth_encoding not in ("absolute", "relative"):
            raise LogahError(f"GHN depth_encoding must be 'absolute' or 'relative', "
                             f"got {self.depth_encoding!r}")
        if self.hidden % self.heads:
            raise LogahError(f"GHN heads={self.heads} does not divide hidden={self.hidden}")
        if self.hidden % 4:
            raise LogahError(f"GHN hidden={self.hidden} must be divisible by 4 (shape encoder)")
        if self.edge_cutoff >= DISTANCE_TABLE - 1:
            raise LogahError(f"GHN edge_cutoff must be below {DISTANCE_TABLE - 1}")



class ShapeEncoder(nn.Module):
    """Embeds a canonical shape (C_out, C_in, h, w): two channel lookups + two spatial lookups."""

    def __init__(self, hidden: int):
        super().__init__()
        self.channels = nn.Embedding(len(CHANNEL_VALUES) + 1, hidden // 4)   # last row: no shape
        self.spatial = nn.Embedding(SPATIAL_VALUES + 1, hidden // 4)         # row 0: no shape

    def forward(self, shapes: torch.Tensor) -> torch.Tensor:
        values = torch.as_tensor(CHANNEL_VALUES, device=shapes.device)
        ch = shapes[..., :2]
        pos = torch.searchsorted(values, ch.clamp(min=1)).clamp(max=len(values) - 1)
        lower = (pos - 1).clamp(min=0)
        nearer_lower = (ch - values[lower]).abs() < (values[pos] - ch).abs()
        ch_idx = torch.where(nearer_lower, lower, pos)
        ch_idx = torch.where(ch > 0, ch_idx, torch.full_like(ch_idx, len(values)))
        sp_idx = shapes[..., 2:].clamp(0, SPATIAL_VALUES)
        return torch.cat([self.channels(ch_idx[..., 0]), self.channels(ch_idx[..., 1]),
                          self.spatial(sp_idx[..., 0]), self.spatial(sp_idx[..., 1])], dim=-1)


class GraphormerLayer(nn.Module):
    """Pre-LN transformer layer over the nodes of each graph, with an additive attention bias."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape                                               # (B, N, d)
        q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           attn_mask=attn_bias)         # (B, H, N, d/H)
        x = x + self.proj(y.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.ln2(x))


class GraphBatch:
    """Padded per-graph tensors for a meta-batch; rows of ``node_rows`` index the real nodes."""

    def __init__(self, graphs: list[Graph], device: torch.device):
        n_max = max(g.num_nodes for g in graphs)
        feats = [g.features for g in graphs]

        def pad(key: str) -> torch.Tensor:
            padded = []
            for f in feats:
                t, short = f[key], n_max - f[key].shape[0]
                widths = {1: (0, short), 2: (0, 0, 0, short)}[t.dim()]
                if key == "distances":
                    widths = (0, short, 0, short)
                padded.append(F.pad(t, widths))
            return torch.stack(padded).to(device)

        self.ops = pad("ops")
        self.shapes = pad("shapes")
        self.in_degree = pad("in_degree").clamp(max=MAX_DEGREE)
        self.out_degree = pad("out_degree").clamp(max=MAX_DEGREE)
        self.input_dist = pad("input_dist")          # 0 on padding rows
        self.distances = pad("distances").clamp(max=DISTANCE_TABLE - 1)
        counts = torch.tensor([g.num_nodes for g in graphs])
        self.mask = (torch.arange(n_max)[None] < counts[:, None]).to(device)   # (B, N)
        self.node_offsets = [i * n_max for i in range(len(graphs))]


class GHN(nn.Module):
    """A graph hypernetwork; see the module docstring."""

    def __init__(self, config: GHNConfig):
        super().__init__()
        config.validate()
        self.config = config
        d = config.hidden
        self.op_embed = nn.Embedding(len(PRIMITIVES), d)
        self.shape_embed = ShapeEncoder(d)
        self.in_degree = nn.Embedding(MAX_DEGREE + 1, d)
        self.out_degree = nn.Embedding(MAX_DEGREE + 1, d)
        self.input_dist = nn.Embedding(MAX_INPUT_DISTANCE + 1 if config.depth_encoding == "absolute"
                                       else RELATIVE_DEPTH_ROWS, d)
        self.edge_embed = nn.Embedding(DISTANCE_TABLE, d)
        self.edge_mlp = nn.Sequential(nn.Linear(2 * d, d), nn.ReLU(), nn.Linear(d, config.heads))
        self.layers = nn.ModuleList(GraphormerLayer(d, config.heads) for _ in range(config.layers))
        self.out_ln = nn.LayerNorm(d)
        if config.decoder == "low-rank":
            self.decoder: nn.Module = LowRankDecoder(d, config.rank, config.max_width,
                                                           config.unit_grid)
        else:
            self.decoder = TiledDecoder(d, config.tile or d, config.spatial, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """Embedding tables start small (std d^-1/2 as GHN-3); last decoder layers are shrunk 5×."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=self.config.hidden ** -0.5)
        last = [m for m in self.decoder.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.weight.div_(5)
            last.bias.zero_()

    @property
    def device(self) -> torch.device:
        return self.op_embed.weight.device

    def depth_rows(self, batch: GraphBatch) -> torch.Tensor:
        """The row of the distance-from-input table each node reads (B, N), by the config's
        ``depth_encoding`` (module docstring)."""
        if self.config.depth_encoding == "absolute":
            return batch.input_dist.clamp(max=MAX_INPUT_DISTANCE)
        deepest = batch.input_dist.amax(dim=1, keepdim=True).clamp(min=1)   # padding rows are 0
        return torch.round(batch.input_dist * (RELATIVE_DEPTH_ROWS - 1) / deepest).long()

    def embed(self, batch: GraphBatch) -> torch.Tensor:
        """Node embeddings (B, N, d) after the Graphormer and the output LayerNorm."""
        x = self.op_embed(batch.ops) + self.shape_embed(batch.shapes)
        x = x + self.in_degree(batch.in_degree) + self.out_degree(batch.out_degree)
        x = x + self.input_dist(self.depth_rows(batch))
        x = x * batch.mask[..., None]
        fwd = self.edge_embed(batch.distances)                         # (B, N, N, d)
        bwd = self.edge_embed(batch.distances.transpose(1, 2))
        bias = self.edge_mlp(torch.cat([fwd, bwd], -1)).permute(0, 3, 1, 2)   # (B, H, N, N)
        key_mask = torch.zeros_like(batch.mask, dtype=bias.dtype).masked_fill(~batch.mask, -math.inf)
        bias = bias + key_mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        return self.out_ln(x)

    def _decode_tasks(self, graphs: list[Graph], offsets: list[int]) -> tuple[list, list]:
        """One ``DecodeTask`` per parameter node of every graph, and who owns it:
        ``(graph index, parameter specs)``."""
        config = self.config
        mean_field_width = config.unit_grid if config.weight_scaling == "mean-field" else 0
        tasks, owners = [], []
        for i, (g, offset) in enumerate(zip(graphs, offsets)):
            output_nodes = _output_nodes(g)
            for node, specs in enumerate(g.params):
                if specs:
                    residual = specs[0].name.endswith(g.residual_projections or ("\0",))
                    scale = weight_scale(specs[0], beta=config.weight_beta, residual=residual,
                                         n_layer=g.n_layer, mean_field_width=mean_field_width)
                    tasks.append(DecodeTask(row=offset + node, shape=node_canonical(specs),
                                            is_vector=len(specs[0].shape) == 1,
                                            norm_parts=len(specs) if specs[0].kind == NORM else 0,
                                            is_output=node in output_nodes, scale=scale,
                                            normalize=specs[0].kind == WEIGHT,
                                            transposed=specs[0].transposed,
                                            identity_rows=(specs[0].kind == EMBEDDING
                                                           or node in output_nodes)))
                    owners.append((i, specs))
        return tasks, owners

    LARGE_PAIRS = 10**7     # node pairs in a meta-batch above which memory is checked

    def check_fits(self, graphs: list[Graph]) -> None:
        """Refuse graphs whose node-pair tensors (distances, their forward and backward edge
        embeddings, the attention bias: the GHN's cost grows with the square of the node count,
        so with a target's depth) cannot fit on the GHN's device, before allocating them."""
        pairs = len(graphs) * max(g.num_nodes for g in graphs) ** 2
        if pairs < self.LARGE_PAIRS:
            return
        from logah.devices import GIB, available_bytes

        needed = pairs * (8 + 2 * 4 * self.config.hidden + 4 * self.config.heads)
        have = available_bytes(self.device)
        if needed > have:
            raise LogahError(f"the GHN needs about {needed / GIB:,.1f} GiB for the node pairs of "
                             f"{max(g.num_nodes for g in graphs):,}-node graphs but {self.device} has "
                             f"{have / GIB:.1f} GiB available (a shallower target, or a smaller GHN)")

    def forward(self, graphs: list[Graph]) -> list[dict[str, torch.Tensor]]:
        """Predicted parameters, one ``{name: tensor}`` per graph, in each tensor's stored layout."""
        if not graphs:
            return []
        self.check_fits(graphs)
        batch = GraphBatch(graphs, self.device)
        with torch.autocast(self.device.type, enabled=False):
            emb = self.embed(batch).float().reshape(-1, self.config.hidden)
            tasks, owners = self._decode_tasks(graphs, batch.node_offsets)
            raw = self.decoder(emb, tasks)
            results: list[dict[str, torch.Tensor]] = [{} for _ in graphs]
            for (i, specs), tensor in zip(owners, raw):
                results[i].update(_postprocessed(specs, tensor))
        return results

    @torch.no_grad()
    def stream(self, graph: Graph) -> tuple[list[ParamSpec], Iterator[tuple[str, Any]]]:
        """The prediction of one graph, tensor by tensor, for targets too large to hold at once
        (``logah.predict.predict_to_folder``). Returns the parameters in the order they will
        come, and an iterator of ``(name, value)``: a tensor in stored layout, or, for a 2-D
        matrix of the low-rank decoder, a ``LowRank`` pair whose product is the tensor (its
        post-processing folded into the left factor). Values agree with ``forward`` to rounding
        (an embedding's RMS is computed from its factors here, from the product there)."""
        self.check_fits([graph])
        batch = GraphBatch([graph], self.device)
        with torch.autocast(self.device.type, enabled=False):
            emb = self.embed(batch).float().reshape(-1, self.config.hidden)
        tasks, owners = self._decode_tasks([graph], batch.node_offsets)
        if not isinstance(self.decoder, LowRankDecoder):   # GHN-3: decoded at once, then streamed
            order = [spec for _, specs in owners for spec in specs]

            def tiled() -> Iterator[tuple[str, Any]]:
                for (_, specs), tensor in zip(owners, self.decoder(emb, tasks)):
                    yield from _postprocessed(specs, tensor).items()
            return order, tiled()
        groups = self.decoder.groups(tasks)
        order = [spec for idx in groups.values() for i in idx for spec in owners[i][1]]

        def low_rank() -> Iterator[tuple[str, Any]]:
            for group in self.decoder.factor_groups(emb, tasks):
                for j, i in enumerate(group.tasks):
                    specs = owners[i][1]
                    spec = specs[0]
                    if len(specs) == 1 and len(spec.shape) == 2 and spec.kind in (WEIGHT, EMBEDDING):
                        left, right = group.stored_factors(j)
                        if spec.kind == EMBEDDING:
                            left = left * embedding_factor(left, right)
                        yield spec.name, LowRank(left, right)
                    else:
                        yield from _postprocessed(specs, group.product(j)).items()
        return order, low_rank()

    def num_params(self, part: str = "all") -> int:
        module = self.decoder if part == "decoder" else self
        return sum(p.numel() for p in module.parameters())


class LowRank:
    """A 2-D tensor kept as two factors, ``left @ rightᵀ`` (rows × r, cols × r), produced in
    row blocks so that the full tensor never has to exist in memory."""

    def __init__(self, left: torch.Tensor, right: torch.Tensor):
        self.left, self.right = left, right
        self.shape = (left.shape[0], right.shape[0])

    def blocks(self, max_elements: int = 2**24) -> Iterator[torch.Tensor]:
        step = max(1, max_elements // max(1, self.shape[1]))
        for start in range(0, self.shape[0], step):
            yield self.left[start:start + step] @ self.right.t()

    def full(self) -> torch.Tensor:
        return self.left @ self.right.t()


def _postprocessed(specs, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """A node's decoded tensor cut into its parameters, each post-processed."""
    values = split_node(specs, tensor)
    return {spec.name: postprocess(spec, values[spec.name],
                                   is_norm_bias=spec.kind == NORM and spec.name.endswith(".bias"))
            for spec in specs}


def _output_nodes(graph: Graph) -> set[int]:
    """The classifier / LM-head node and the bias node it feeds, if any (GHN-3 treats both
    specially). For a tied GPT-2 that is the token embedding, which feeds no bias."""
    head = graph.output_node
    bias = head + 1
    if bias < graph.num_nodes and graph.ops[bias] == "bias" and graph.distances[head, bias] == 1:
        return {head, bias}
    return {head}


def build_ghn(config: GHNConfig, seed: int = 0) -> GHN:
    """A freshly initialised GHN; the same seed gives the same weights on any machine."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GHN(config)
