"""The family registry: every registered family is tested here by being registered, and the Llama
family's graph, shapes and Hugging Face round trips in particular."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import SMALL_LLAMA, SMALL_TARGETS, TIED_LLAMA
from logah.archs import get_space, sample_archs
from logah.checkpoint import resolve_ghn
from logah.errors import LogahError
from logah.families import FAMILIES, family_of, get_family
from logah.study.scales import SCALES
from logah.graph import graph_of
from logah.predict import (bound_forward, load_predicted, predict_params, predict_to_folder,
                           save_prediction)
from logah.shards import INDEX_FILE, read_weights
from logah.targets import arch_from_dict, build_model, count_params, example_input

FAMILY_IDS = list(FAMILIES)


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_every_family_is_complete(name):
    """Records round-trip, spaces sample and build, named targets validate with analytic
    parameter counts equal to the built module's, presets and scales point at real names."""
    family = get_family(name)
    assert family.name == name and family.arch_class.family == name
    from logah.finetune import FINETUNE_PRESETS
    from logah.presets import GHN_PRESETS

    for target_name, arch in family.targets.items():
        assert arch_from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
        assert family_of(arch) is family and target_name in family.target_notes
        assert arch.num_params() == count_params(arch), target_name
    for space_name in family.spaces:
        space = get_space(space_name)
        assert space.family == name
        for arch in sample_archs(space, n=5):
            assert family_of(arch) is family and arch.num_params() == count_params(arch)
    assert set(family.scales) == set(SCALES)
    for scale in SCALES:
        recipe = family.scales[scale]
        assert recipe.ghn in GHN_PRESETS and recipe.space in family.spaces
        assert recipe.target in family.targets and recipe.tuning in FINETUNE_PRESETS
    for panel in family.panels.values():
        assert all(t in family.targets for t in panel)


def test_an_unknown_family_is_one_clear_error():
    with pytest.raises(LogahError, match="unknown target family 'mamba': use one of vit, gpt2, llama"):
        get_family("mamba")
    with pytest.raises(LogahError, match="unknown target family 'mamba'"):
        arch_from_dict({"family": "mamba", "depth": 3})
    with pytest.raises(LogahError, match="unknown target family None"):
        arch_from_dict({"n_layer": 3})


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_fields_of_the_wrong_type_are_refused(name):
    record = SMALL_TARGETS[name].to_dict()
    for field, value in record.items():
        if field == "family":
            continue
        bad = "no" if not isinstance(value, str) else 3
        with pytest.raises(LogahError, match=field):
            arch_from_dict({**record, field: bad})
    with pytest.raises(LogahError, match="unknown fields"):
        arch_from_dict({**record, "depth": 3})


@pytest.mark.parametrize("name", FAMILY_IDS)
def test_prediction_round_trips_through_the_saved_folder(tmp_path, name):
    """The saved folder rebuilds the same module (a Hugging Face folder for text families), in
    memory or streamed, and bfloat16 saves are the prediction rounded."""
    arch = SMALL_TARGETS[name]
    ghn = resolve_ghn("logah-test", seed=0)
    params = predict_params(ghn, arch)
    save_prediction(arch, params, tmp_path / "memory")
    streamed = predict_to_folder(ghn, arch, tmp_path / "stream")
    assert streamed.num_params == arch.num_params()
    x = example_input(arch, "cpu", batch=2, seq_len=12)
    expected = bound_forward(build_model(arch).eval(), params, arch, x)
    for folder, tolerance in (("memory", 0), ("stream", 1e-3)):
        loaded_arch, model = load_predicted(tmp_path / folder)
        assert loaded_arch == arch
        state = dict(model.named_parameters())
        for key, value in params.items():
            torch.testing.assert_close(state[key], value, rtol=tolerance * 1e-2, atol=1e-8)
        with torch.no_grad():
            torch.testing.assert_close(get_family(name).forward(model.eval(), arch, x), expected,
                                       rtol=tolerance, atol=tolerance / 10)
    predict_to_folder(ghn, arch, tmp_path / "bf16", dtype="bfloat16")
    half = read_weights(tmp_path / "bf16")
    assert all(t.dtype == torch.bfloat16 for t in half.values())
    for key, value in params.items():
        torch.testing.assert_close(half[key].float(), value.to(torch.bfloat16).float(),
                                   rtol=1e-2, atol=1e-4)


def test_streamed_shards_have_an_index_and_stay_bit_identical_to_memory(tmp_path):
    """Small shards force an index; tensors that are not embeddings are the in-memory ones to
    the bit (the same factors and products), embeddings to rounding (their RMS is computed from
    the factors)."""
    ghn = resolve_ghn("logah-test", seed=0)
    params = predict_params(ghn, SMALL_LLAMA)
    predict_to_folder(ghn, SMALL_LLAMA, tmp_path / "out", max_shard_bytes=20_000)
    index = json.loads((tmp_path / "out" / INDEX_FILE).read_text())
    assert set(index["weight_map"]) == set(params) and len(set(index["weight_map"].values())) > 3
    state = read_weights(tmp_path / "out")
    for key, value in params.items():
        if "embed_tokens" in key:
            torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-8)
        else:
            assert torch.equal(state[key], value), key


# --- the Llama family --------------------------------------------------------------------------

GOLDEN_LLAMA = {"input": 1, "pos_enc": 1, "ln": 5, "conv": 15, "msa": 2, "sum": 4}


def test_golden_llama_graph():
    """RMSNorms are ln nodes (no global pooling), the SwiGLU gate and up projections both feed
    the down projection, q, k and v feed the attention, the output head is its own node, and
    the layer count is the record's."""
    graph = graph_of(SMALL_LLAMA)
    assert graph.op_counts() == GOLDEN_LLAMA and graph.n_layer == 2
    node = {ps[0].name: i for i, ps in enumerate(graph.params) if ps}
    preds = lambda i: sorted(int(s) for s, d in graph.edges if d == i)  # noqa: E731
    layer = "model.layers.0."
    gate, up, down = (node[layer + f"mlp.{p}_proj.weight"] for p in ("gate", "up", "down"))
    assert preds(down) == sorted([gate, up])
    msa = next(i for i, op in enumerate(graph.ops) if op == "msa")
    assert preds(msa) == sorted(node[layer + f"self_attn.{p}_proj.weight"] for p in "qkv")
    assert preds(node[layer + "self_attn.o_proj.weight"]) == [msa]
    norm = node[layer + "input_layernorm.weight"]
    assert graph.ops[norm] == "ln" and len(graph.params[norm]) == 1
    assert [p.name for p in graph.params[graph.output_node]] == ["lm_head.weight"]
    assert all(s < d for s, d in graph.edges.tolist())          # forward (topological) order
    tied = graph_of(TIED_LLAMA)
    assert tied.op_counts() == {**GOLDEN_LLAMA, "conv": 14}
    assert [p.name for p in tied.params[tied.output_node]] == ["model.embed_tokens.weight"]


@pytest.mark.parametrize("depth", [1, 3])
def test_llama_node_counts_scale_with_depth(depth):
    arch = dataclasses.replace(SMALL_LLAMA, num_hidden_layers=depth)
    assert graph_of(arch).op_counts() == {"input": 1, "pos_enc": 1, "ln": 2 * depth + 1,
                                          "conv": 7 * depth + 1, "msa": depth, "sum": 2 * depth}


def test_eager_and_sdpa_llama_attention_give_one_graph():
    from transformers import LlamaForCausalLM

    from logah.graph import build_graph

    graphs = []
    for attn in ("eager", "sdpa"):
        with torch.device("meta"):
            model = LlamaForCausalLM._from_config(get_family("llama").hf_config(SMALL_LLAMA),
                                                  attn_implementation=attn)
        graphs.append(build_graph(model, SMALL_LLAMA))
    graphs.append(graph_of(SMALL_LLAMA))
    assert graphs[0].ops == graphs[1].ops == graphs[2].ops
    assert np.array_equal(graphs[0].edges, graphs[1].edges)


# Hugging Face configs of the real models (from their config.json): parameter counts of
# LlamaForCausalLM built on meta, as the issue lists them.
REAL_COUNTS = {"smollm2-135m": 134_515_008, "tinyllama-1.1b": 1_100_048_384,
               "llama-2-7b": 6_738_415_616, "llama-3.1-8b": 8_030_261_248}


@pytest.mark.parametrize("name", list(REAL_COUNTS))
def test_real_llama_shapes_have_hugging_faces_parameter_counts(name):
    arch = get_family("llama").targets[name]
    model = build_model(arch, "meta")
    assert model.num_parameters() == arch.num_params() == REAL_COUNTS[name]


def test_tiled_decoder_keeps_rmsnorm_one_vector():
    """GHN-3's decoder predicts a norm node's vectors together; RMSNorm has one (a LayerNorm's
    weight and bias are two), so its whole weight comes from the weight half."""
    params = predict_params(resolve_ghn("ghn3-test", seed=0), SMALL_LLAMA)
    weight = params["model.layers.0.input_layernorm.weight"]
    assert weight.shape == (32,) and torch.isfinite(weight).all()
    assert (weight > 0).all()             # 2·sigmoid: a gain, not a bias in (-1, 1)


def test_predicted_llama_loads_with_from_pretrained_and_generates(tmp_path):
    from transformers import LlamaForCausalLM

    assert predict_to_folder(resolve_ghn("logah-test", seed=0), SMALL_LLAMA, tmp_path / "llama")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "llama", local_files_only=True).eval()
    prompt = torch.tensor([[5, 17, 42]])
    out = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 9) and torch.equal(out[:, :3], prompt)
    assert out.max() < SMALL_LLAMA.vocab_size
