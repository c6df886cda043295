"""Golden graphs: node types, parameter attachment, attention, distances, unsupported modules."""

import collections

import numpy as np
import pytest
import torch
from torch import nn

from conftest import SMALL_GPT, SMALL_VIT, TIED_GPT
from logah.errors import LogahError
from logah.graph import DEFAULT_EDGE_CUTOFF, build_graph, graph_of
from logah.families import get_family
from logah.families.gpt2 import GPT2Arch
from logah.families.vit import ViTArch
from logah.targets import NAMED_TARGETS, build_model

GOLDEN_VIT = {"input": 1, "conv": 10, "bias": 10, "pos_enc": 2, "ln": 5, "msa": 2, "sum": 4}
GOLDEN_GPT = {"input": 1, "pos_enc": 2, "sum": 5, "ln": 5, "conv": 9, "bias": 8, "msa": 2}


def test_golden_vit_node_types():
    assert graph_of(SMALL_VIT).op_counts() == GOLDEN_VIT


def test_golden_gpt2_node_types():
    assert graph_of(SMALL_GPT).op_counts() == GOLDEN_GPT


def test_tied_gpt2_has_no_separate_lm_head_node():
    counts = graph_of(TIED_GPT).op_counts()
    assert counts == {**GOLDEN_GPT, "conv": 8}


@pytest.mark.parametrize("arch, head, op", [
    (SMALL_VIT, "heads.head.weight", "conv"),
    (SMALL_GPT, "lm_head.weight", "conv"),
    (TIED_GPT, "transformer.wte.weight", "pos_enc"),   # the tied embedding is the LM head
], ids=["vit", "gpt2", "tied-gpt2"])
def test_output_node_is_the_classifier_or_lm_head(arch, head, op):
    graph = graph_of(arch)
    node = graph.output_node
    assert [p.name for p in graph.params[node]] == [head] and graph.ops[node] == op
    last_weight = max(i for i, ps in enumerate(graph.params) if ps and ps[0].kind == "weight")
    if arch is TIED_GPT:     # the last weight is the last block's MLP projection, not the head
        assert graph.params[last_weight][0].name == "transformer.h.1.mlp.c_proj.weight"
        assert last_weight != node
    else:
        assert last_weight == node


@pytest.mark.parametrize("depth", [1, 4])
def test_node_counts_scale_with_depth(depth):
    vit = graph_of(ViTArch(num_layers=depth, hidden_dim=24, num_heads=3, mlp_dim=48,
                           image_size=8, patch_size=4, num_classes=3)).op_counts()
    assert vit == {"input": 1, "conv": 4 * depth + 2, "bias": 4 * depth + 2, "pos_enc": 2,
                   "ln": 2 * depth + 1, "msa": depth, "sum": 2 * depth}
    gpt = graph_of(GPT2Arch(n_layer=depth, n_embd=16, n_head=2, vocab_size=50,
                            n_positions=16)).op_counts()
    assert gpt == {"input": 1, "pos_enc": 2, "sum": 2 * depth + 1, "ln": 2 * depth + 1,
                   "conv": 4 * depth + 1, "bias": 4 * depth, "msa": depth}


@pytest.mark.parametrize("arch", [SMALL_VIT, SMALL_GPT, TIED_GPT], ids=["vit", "gpt2", "tied"])
def test_every_parameter_on_exactly_one_node(arch):
    graph = graph_of(arch)
    names = graph.param_names()
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(n for n, _ in build_model(arch).named_parameters())
    for op, specs in zip(graph.ops, graph.params):
        assert bool(specs) == (op in {"conv", "bias", "ln", "pos_enc"})


def test_attention_is_msa_on_every_kernel():
    """Eager softmax, SDPA on meta (safe softmax) and SDPA on CPU (fused kernel) agree."""
    from transformers import GPT2LMHeadModel

    graphs = []
    for attn in ("eager", "sdpa"):
        with torch.device("meta"):
            model = GPT2LMHeadModel._from_config(get_family("gpt2").hf_config(SMALL_GPT),
                                                     attn_implementation=attn)
        graphs.append(build_graph(model, SMALL_GPT))
    graphs.append(build_graph(build_model(SMALL_VIT, "cpu"), SMALL_VIT))
    graphs.append(graph_of(SMALL_VIT))
    for a, b in [(graphs[0], graphs[1]), (graphs[2], graphs[3])]:
        assert a.ops == b.ops
        assert np.array_equal(a.edges, b.edges)
    assert graphs[0].op_counts()["msa"] == 2


def test_msa_sits_between_qkv_and_output_projection():
    graph = graph_of(SMALL_GPT)
    for node, op in enumerate(graph.ops):
        if op == "msa":
            preds = [s for s, d in graph.edges if d == node]
            succs = [d for s, d in graph.edges if s == node]
            assert [graph.params[p][0].name.split(".")[-2:] for p in preds] == [["c_attn", "bias"]]
            assert [graph.params[s][0].name.split(".")[-2:] for s in succs] == [["c_proj", "weight"]]
            # no edge bypasses attention (the value path of unfused attention is folded into msa)
            assert not any(s == preds[0] and d == succs[0] for s, d in graph.edges)


def test_distances_and_virtual_edge_cutoff():
    graph = graph_of(SMALL_VIT, edge_cutoff=3)
    d = graph.distances
    assert all(d[s, t] == 1 for s, t in graph.edges)
    assert d.max() == 3 and np.all(np.diag(d) == 0)
    assert graph.ops[0] == "input" and all(d[0, i] > 0 for i in range(1, 4))
    full = graph_of(SMALL_VIT, edge_cutoff=50).distances
    assert full.max() > 3 and np.array_equal(np.where(full <= 3, full, 0), d)


def _bfs_depths(graph) -> list[int]:
    """Shortest-path length from the input to every node, by breadth-first search over the edges."""
    succ = collections.defaultdict(list)
    for s, t in graph.edges.tolist():
        succ[s].append(t)
    depth, queue = {0: 0}, collections.deque([0])
    while queue:
        s = queue.popleft()
        for t in succ[s]:
            if t not in depth:
                depth[t] = depth[s] + 1
                queue.append(t)
    return [depth[i] for i in range(graph.num_nodes)]


def test_distance_from_input_has_no_cutoff_in_gpt2_large():
    """GPT-2-L's deepest nodes are more than 50 steps from the input: each keeps its own depth
    (the cut-off matrix would give 170 of its 474 nodes the input's distance 0)."""
    graph = graph_of(NAMED_TARGETS["gpt2-l"])
    depth = graph.features["input_dist"].tolist()
    assert depth == _bfs_depths(graph)
    assert depth.count(0) == 1 and max(depth) > DEFAULT_EDGE_CUTOFF
    assert sorted(set(depth)) == list(range(max(depth) + 1))
    far = [d for d in depth if d > DEFAULT_EDGE_CUTOFF]
    assert len(far) > 100 and np.all(graph.distances[0][np.array(depth) > DEFAULT_EDGE_CUTOFF] == 0)


def test_nodes_are_in_topological_order():
    for arch in (SMALL_VIT, SMALL_GPT):
        graph = graph_of(arch)
        assert all(s < t for s, t in graph.edges)
        assert set(range(1, graph.num_nodes)) == {t for _, t in graph.edges}


def test_large_targets_trace_on_meta_without_memory():
    graph = graph_of(NAMED_TARGETS["gpt2-l"])
    assert graph.op_counts() == {"input": 1, "pos_enc": 2, "sum": 73, "ln": 73, "conv": 145,
                                 "bias": 144, "msa": 36}
    assert graph_of(NAMED_TARGETS["vit-b"]).op_counts()["msa"] == 12


class _Gate(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x * self.gain


def test_unsupported_module_is_named():
    model = build_model(SMALL_VIT)
    with torch.device("meta"):
        model.heads = nn.Sequential(_Gate(32), nn.Linear(32, 10))
    with pytest.raises(LogahError, match=r"'heads\.0' of type .*_Gate owns parameter 'gain'"):
        build_graph(model, SMALL_VIT)
