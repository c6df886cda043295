"""Computational graphs of target networks, traced from autograd on the ``meta`` device.

One forward pass of the target (built on ``meta``: no memory, no random init) is run with
parameters that require grad, and the autograd graph behind the output is walked. The raw
graph (hundreds of view/transpose/matmul functions) is reduced to the DeepNets-1M primitives:

* a function that consumes parameters becomes a chain of *parameter nodes*, typed by the module
  that owns each parameter (the family's ``module_rules``, ``logah.families``): weight ``conv``
  → ``bias``; a LayerNorm is one ``ln`` node holding weight and bias, an RMSNorm one holding its
  weight; embeddings, ViT position embeddings and class token are ``pos_enc``. Parameters reached
  through views, transposes, expands or dtype casts count as consumed by the function that uses
  the view;
* everything computed *inside* a norm module (RMSNorm's square, mean, rsqrt and product; one
  fused function for LayerNorm) belongs to that norm's node: a norm is not a global average
  pooling however it is written. The functions are found with forward hooks on the modules
  whose rules hold a norm parameter: those between the module's input and its output;
* attention is ``msa`` whatever kernel autograd shows (``SoftmaxBackward0`` for eager,
  ``SafeSoftmaxBackward0`` for the SDPA math path, the fused ``ScaledDotProduct*Attention*``
  kernels on CPU and GPU), so the graph does not depend on which SDPA path torch takes;
* ``AddBackward0`` becomes ``sum`` and ``CatBackward0`` ``concat`` only when at least two distinct
  graph nodes feed them (GELU's internal adds collapse); ``Mean*`` becomes ``glob_avg``;
* every other function is transparent: its inputs are wired to its consumers.

A parameter used twice (tied embeddings) is attached to the node of its first use only; later
uses add no node. After the reduction, edges that bypass an ``msa`` node (the value path of
unfused attention) are removed, so fused and unfused attention give the same graph.
``input`` is node 0 and feeds every node that has no predecessor; nodes are numbered in
forward (topological) order.

Output node: the node of the weight or embedding that the forward pass uses last, counting every
use of a tied tensor: the classifier of a ViT, the ``lm_head`` of an untied GPT-2, and the token
embedding of a tied one (its language-model head; the last ``mlp.c_proj`` is not).

Virtual edges: ``distances[i, j]`` is the shortest-path length from i to j when it is at most
``edge_cutoff`` (1 is a real edge), else 0. The Graphormer reads it in both directions.

Distance from the input: ``input_distance[i]`` is the shortest-path length from the input node
to node i with *no* cutoff (the GHN embeds it in a table of 1001 rows, GHN-3's size). Reading it
from the cut-off matrix would give every node further than ``edge_cutoff`` the input's own
distance 0: in GPT-2-L 170 of 474 nodes, the deepest third of the network, would look like the
input. The other choice, a table sized to the cutoff, would keep that collapse. The pairwise
matrix keeps the paper's cutoff (docs/design.md §3.1) and its 257-row table.

The number of layers (``n_layer``, for GPT-2's residual scaling) is the record's ``depth``. A
parameter whose owning module is not in the family's rules raises ``LogahError`` naming the
module and its type, rather than being silently mis-typed.
"""

from __future__ import annotations

import collections
import heapq
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import shortest_path
from torch import nn

from logah.errors import LogahError
from logah.families import family_of
from logah.layout import BIAS, EMBEDDING, NORM, WEIGHT, ParamSpec
from logah.targets import Arch, build_model

PRIMITIVES = ("max_pool", "avg_pool", "sep_conv", "dil_conv", "conv", "msa", "cse", "sum",
              "concat", "input", "bias", "bn", "ln", "pos_enc", "glob_avg")
OP_INDEX = {op: i for i, op in enumerate(PRIMITIVES)}
DEFAULT_EDGE_CUTOFF = 50

# kind of each parameter of a node: drives the primitive, the layout and the post-processing.
_KIND_TO_OP = {WEIGHT: "conv", BIAS: "bias", NORM: "ln", EMBEDDING: "pos_enc"}


# Autograd functions that only re-view a tensor: a parameter seen through them is still itself.
_VIEW_PREFIXES = ("TBackward", "ViewBackward", "UnsafeViewBackward", "ExpandBackward",
                  "UnsqueezeBackward", "SqueezeBackward", "PermuteBackward", "TransposeBackward",
                  "ReshapeAliasBackward", "AliasBackward", "ToCopyBackward", "CloneBackward",
                  "SliceBackward", "SelectBackward", "SplitBackward", "SplitWithSizesBackward",
                  "UnsafeSplitBackward", "UnbindBackward")


def _attention_op(name: str) -> bool:
    return "Softmax" in name or "Attention" in name


@dataclass
class Graph:
    """A target network as the GHN sees it. ``params[i]`` are the tensors attached to node i."""

    ops: list[str]
    params: list[tuple[ParamSpec, ...]]
    edges: np.ndarray                       # (E, 2) int64 real edges (src, dst)
    distances: np.ndarray                   # (N, N) int16, see module docstring
    input_distance: np.ndarray              # (N,) int64 distance from the input, no cutoff
    output_node: int                        # the classifier / LM head (module docstring)
    residual_projections: tuple[str, ...] = ()   # name suffixes scaled by 1/sqrt(2 n_layer)
    n_layer: int = 1
    meta: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return len(self.ops)

    def op_counts(self) -> dict[str, int]:
        return dict(collections.Counter(self.ops))

    def param_names(self) -> list[str]:
        return [p.name for ps in self.params for p in ps]

    @cached_property
    def features(self) -> dict[str, torch.Tensor]:
        """Integer node features for the GHN (computed once per graph)."""
        n = self.num_nodes
        real = (self.distances == 1)
        shapes = [ps[0].feature_shape if ps else (0, 0, 0, 0) for ps in self.params]
        return {
            "ops": torch.tensor([OP_INDEX[o] for o in self.ops], dtype=torch.long),
            "shapes": torch.tensor(shapes, dtype=torch.long).reshape(n, 4),
            "in_degree": torch.from_numpy(real.sum(0).astype(np.int64)),
            "out_degree": torch.from_numpy(real.sum(1).astype(np.int64)),
            "input_dist": torch.from_numpy(self.input_distance),
            "distances": torch.from_numpy(self.distances.astype(np.int64)),
        }


def build_graph(model: nn.Module, arch: Arch, edge_cutoff: int = DEFAULT_EDGE_CUTOFF) -> Graph:
    """Trace ``model`` (ideally on ``meta``) and reduce its autograd graph; see the module docstring."""
    family = family_of(arch)
    rules = family.module_rules()
    names = {id(p): n for n, p in model.named_parameters()}
    specs = _param_specs(model, rules)
    with torch.enable_grad(), _Interiors(model, _opaque_modules(family, rules)) as interiors:
        out = family.trace_output(model, arch)
    if out.grad_fn is None:
        raise LogahError("the model output does not depend on any parameter that requires grad")
    builder = _Reducer(names, specs, interiors.functions())
    builder.run(out.grad_fn)
    missing = sorted(set(specs) - builder.attached)
    if missing:
        raise LogahError(f"parameters not used in the forward pass, so not in the graph: {missing[:5]}")
    edges = np.array(sorted(builder.edges), dtype=np.int64).reshape(-1, 2)
    node_of = {spec.name: i for i, specs in enumerate(builder.params) for spec in specs}
    output_node = node_of.get(builder.last_matrix, len(builder.ops) - 1)
    distances, input_distance = _distances(len(builder.ops), edges, edge_cutoff)
    return Graph(ops=builder.ops, params=builder.params, edges=edges, distances=distances,
                 input_distance=input_distance, output_node=output_node,
                 residual_projections=family.residual_projections(arch), n_layer=arch.depth,
                 meta={"edge_cutoff": edge_cutoff, "family": arch.family})


def graph_of(arch: Arch, edge_cutoff: int = DEFAULT_EDGE_CUTOFF) -> Graph:
    """Build the target on ``meta`` and trace it: the graph of an architecture record."""
    check_graph_size(arch, edge_cutoff)
    return build_graph(build_model(arch, "meta"), arch, edge_cutoff)


DEEP = 64           # blocks beyond the deepest target of the paper: the graph's size is checked
PAIR_BYTES = 2 + 8  # per pair of nodes: ``distances`` (int16) and its int64 copy in ``features``


def estimated_nodes(arch: Arch, edge_cutoff: int = DEFAULT_EDGE_CUTOFF) -> int:
    """The node count of ``arch``'s graph without tracing it: every block adds the same nodes,
    so the graphs of a one- and a two-block copy give it."""
    one, two = (build_graph(build_model(arch.with_depth(d), "meta"), arch.with_depth(d),
                            edge_cutoff).num_nodes for d in (1, 2))
    return one + (two - one) * (arch.depth - 1)


def check_graph_size(arch: Arch, edge_cutoff: int = DEFAULT_EDGE_CUTOFF) -> None:
    """Refuse a target whose graph (its N x N distances) cannot fit in memory before tracing it:
    tracing and the distances grow with depth, and a graph too large would run for hours
    before failing. Targets no deeper than ``DEEP`` are not checked (no estimate needed)."""
    from logah.devices import GIB, available_bytes

    if arch.depth <= DEEP:
        return
    nodes = estimated_nodes(arch, edge_cutoff)
    needed, have = nodes ** 2 * PAIR_BYTES, available_bytes(torch.device("cpu"))
    if needed > have:
        raise LogahError(f"the graph of this {arch.family} target ({arch.depth} blocks, about "
                         f"{nodes:,} nodes) needs about {needed / GIB:,.1f} GiB for its node pairs "
                         f"but this machine has {have / GIB:.1f} GiB available")


def _param_specs(model: nn.Module, table: list) -> dict[str, ParamSpec]:
    specs, seen = {}, set()
    for mod_name, module in model.named_modules():
        for attr, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue  # tied: the tensor belongs to the module that owns it first
            seen.add(id(param))
            full = f"{mod_name}.{attr}" if mod_name else attr
            rule = next((rules for cls, rules in table if isinstance(module, cls)), None)
            if rule is None or attr not in rule:
                raise LogahError(f"unsupported module in graph: {mod_name or '<root>'!r} of type "
                                 f"{type(module).__module__}.{type(module).__qualname__} owns "
                                 f"parameter {attr!r}; supported types: "
                                 f"{', '.join(c.__name__ for c, _ in table)}")
            kind, transposed = rule[attr]
            specs[full] = ParamSpec(name=full, shape=tuple(param.shape), kind=kind,
                                    transposed=transposed)
    return specs


class _Interiors:
    """Forward hooks on modules whose inside is not graph structure (norms; attention, whose
    score arithmetic, rotary positions and masks are part of ``msa``) that record each call's
    input and output autograd functions; ``functions()`` is then every function strictly inside
    such a module (between its input's function and its output's, the output's included)."""

    def __init__(self, model: nn.Module, module_types: tuple[type, ...]):
        self.modules = [m for m in model.modules() if module_types and isinstance(m, module_types)]
        self.calls: list[tuple[set, object]] = []
        self.handles: list = []

    def __enter__(self) -> "_Interiors":
        self.handles = [m.register_forward_hook(self._record, with_kwargs=True)
                        for m in self.modules]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()

    def _record(self, module, args, kwargs, output) -> None:
        output = output[0] if isinstance(output, tuple) else output
        inputs = [*args, *kwargs.values()]
        starts = {t.grad_fn for t in inputs if isinstance(t, torch.Tensor) and t.grad_fn is not None}
        if starts and isinstance(output, torch.Tensor) and output.grad_fn is not None:
            self.calls.append((starts, output.grad_fn))

    def functions(self) -> set:
        inside: set = set()
        for starts, end in self.calls:
            stack = [end]
            while stack:
                fn = stack.pop()
                if fn is None or fn in starts or fn in inside:
                    continue
                inside.add(fn)
                stack.extend(nxt for nxt, _ in fn.next_functions)
        return inside


def _opaque_modules(family, table: list) -> tuple[type, ...]:
    """Norm modules (those whose rules hold a norm parameter) and the family's attention modules."""
    norms = tuple(cls for cls, rules in table if any(kind == NORM for kind, _ in rules.values()))
    return norms + tuple(family.attention_modules())


class _Reducer:
    """Walks autograd functions in forward order and emits reduced graph nodes and edges."""

    def __init__(self, names: dict[int, str], specs: dict[str, ParamSpec], interiors: set = frozenset()):
        self.names, self.specs, self.interiors = names, specs, interiors
        self.ops: list[str] = ["input"]
        self.params: list[tuple[ParamSpec, ...]] = [()]
        self.edges: set[tuple[int, int]] = set()
        self.attached: set[str] = set()
        self.last_matrix: str | None = None   # the weight or embedding used last: the output head
        self._param_of: dict = {}

    def _param_behind(self, fn) -> str | None:
        """Name of the parameter that ``fn`` merely views (transpose, expand, cast...), if any."""
        if fn in self._param_of:
            return self._param_of[fn]
        result = None
        if type(fn).__name__ == "AccumulateGrad":
            result = self.names.get(id(fn.variable))
        else:
            inputs = [f for f, _ in fn.next_functions if f is not None]
            if len(inputs) == 1 and type(fn).__name__.startswith(_VIEW_PREFIXES):
                result = self._param_behind(inputs[0])
        self._param_of[fn] = result
        return result

    def _forward_order(self, root) -> list:
        order, seen, stack = [], set(), [(root, False)]
        while stack:
            fn, done = stack.pop()
            if done:
                order.append(fn)
                continue
            if fn in seen:
                continue
            seen.add(fn)
            stack.append((fn, True))
            for nxt, _ in reversed(fn.next_functions):
                if nxt is not None and nxt not in seen:
                    stack.append((nxt, False))
        return order

    def _new_node(self, op: str, params: tuple[ParamSpec, ...], preds: set[int]) -> int:
        idx = len(self.ops)
        self.ops.append(op)
        self.params.append(params)
        for p in preds or {0}:
            self.edges.add((p, idx))
        return idx

    def run(self, root) -> None:
        outputs: dict = {}   # autograd function -> set of graph nodes whose value flows out of it
        for fn in self._forward_order(root):
            if self._param_behind(fn) is not None:
                continue  # a parameter (or a view of one): consumed by whoever uses it
            data, consumed = set(), []
            for nxt, _ in fn.next_functions:
                if nxt is None:
                    continue
                name = self._param_behind(nxt)
                if name is None:
                    data |= outputs.get(nxt, set())
                    continue
                if self.specs[name].kind in (WEIGHT, EMBEDDING):
                    self.last_matrix = name     # a tied one counts at every use
                if name not in self.attached:
                    consumed.append(name)
                    self.attached.add(name)
            name = type(fn).__name__
            if consumed or fn not in self.interiors or _attention_op(name):
                outputs[fn] = self._reduce(name, data, consumed)
            else:
                outputs[fn] = data       # inside a norm or an attention: part of its node
        self._drop_attention_bypasses()
        self._renumber_topologically()

    def _reduce(self, fn_name: str, data: set[int], consumed: list[str]) -> set[int]:
        if consumed:
            return {self._param_chain(data, consumed)}
        if _attention_op(fn_name):
            return {self._new_node("msa", (), data)}
        if fn_name.startswith("Mean"):
            return {self._new_node("glob_avg", (), data)}
        if len(data) >= 2 and fn_name.startswith(("AddBackward", "CatBackward")):
            op = "sum" if fn_name.startswith("Add") else "concat"
            return {self._new_node(op, (), data)}
        return data

    def _param_chain(self, data: set[int], consumed: list[str]) -> int:
        """Nodes for the parameters one function consumes: weights first, then biases."""
        groups: dict[tuple[str, str], list[ParamSpec]] = {}
        for name in consumed:
            spec = self.specs[name]
            owner = name.rsplit(".", 1)[0] if spec.kind == NORM else name
            groups.setdefault((owner, spec.kind), []).append(spec)
        order = sorted(groups.items(), key=lambda item: item[0][1] == BIAS)
        preds = data
        for (_, kind), specs in order:
            node = self._new_node(_KIND_TO_OP[kind], tuple(specs), preds)
            preds = {node}
        return node

    def _drop_attention_bypasses(self) -> None:
        """Every input of an attention goes into its ``msa`` node and nothing goes around it:
        an edge from an input of the msa to what the msa feeds is dropped (the value path of
        unfused attention over a fused qkv projection), and a projection that feeds the msa's
        successor beside it, from the same source as the msa's inputs (a separate value
        projection, e.g. Llama's ``v_proj``), feeds the msa instead."""
        succ = collections.defaultdict(set)
        pred = collections.defaultdict(set)
        for s, d in self.edges:
            succ[s].add(d)
            pred[d].add(s)
        for node, op in enumerate(self.ops):
            if op != "msa":
                continue
            sources = set().union(*(pred[p] for p in pred[node]))
            for s in list(succ[node]):
                for p in list(pred[s]):
                    if p in pred[node]:
                        self.edges.discard((p, s))
                    elif p != node and self.params[p] and pred[p] & sources:
                        self.edges.discard((p, s))
                        self.edges.add((p, node))


    def _renumber_topologically(self) -> None:
        """Nodes in forward order again after rewiring (a value projection traced after its
        attention now feeds it): the topological order that keeps each node as early as the
        trace put it, so a graph that needed no rewiring keeps its numbering."""
        if all(s < d for s, d in self.edges):
            return
        succ = collections.defaultdict(list)
        waiting = [0] * len(self.ops)
        for s, d in self.edges:
            succ[s].append(d)
            waiting[d] += 1
        ready = [n for n in range(len(self.ops)) if not waiting[n]]
        heapq.heapify(ready)
        order = []
        while ready:
            node = heapq.heappop(ready)
            order.append(node)
            for d in succ[node]:
                waiting[d] -= 1
                if not waiting[d]:
                    heapq.heappush(ready, d)
        assert len(order) == len(self.ops), "the reduced graph has a cycle"
        new = {old: i for i, old in enumerate(order)}
        self.ops = [self.ops[old] for old in order]
        self.params = [self.params[old] for old in order]
        self.edges = {(new[s], new[d]) for s, d in self.edges}


def _distances(n: int, edges: np.ndarray, cutoff: int) -> tuple[np.ndarray, np.ndarray]:
    """The virtual-edge matrix (shortest paths up to ``cutoff``, else 0) and the distance of
    every node from the input, with no cutoff (every node is reachable from the input)."""
    adjacency = csr_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    dist = shortest_path(adjacency, method="D", directed=True, unweighted=True)
    assert np.isfinite(dist[0]).all(), "a node is not reachable from the input"
    from_input = dist[0].astype(np.int64)
    dist[~np.isfinite(dist) | (dist > cutoff)] = 0
    return dist.astype(np.int16), from_input
