"""The GHN: complete predictions, rank bound, tiling, batch independence, gradients."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import SMALL_GPT, SMALL_VIT, TIED_GPT, WIDE_VIT
from logah.decoders import DecodeTask, LowRankDecoder
from logah.errors import LogahError
from logah.ghn import GHNConfig, build_ghn
from logah.graph import graph_of
from logah.layout import WEIGHT, ParamSpec
from logah.postprocess import weight_scale
from logah.predict import bound_forward
from logah.presets import get_preset
from logah.families.gpt2 import GPT2Arch
from logah.targets import build_model, example_input

ARCHS = [SMALL_VIT, WIDE_VIT, SMALL_GPT, TIED_GPT]


def numerical_rank(matrix: torch.Tensor, rtol: float = 1e-4) -> int:
    """Singular values above rtol·σ_max (the products are float32, so exact zeros are not expected)."""
    s = torch.linalg.svdvals(matrix.detach().double())
    return int((s > rtol * s[0]).sum())


@pytest.mark.parametrize("arch", ARCHS, ids=["vit", "wide-vit", "gpt2", "tied-gpt2"])
def test_every_parameter_predicted_and_forward_finite(ghn, arch):
    model = build_model(arch, "meta").eval()
    params = ghn([graph_of(arch)])[0]
    expected = dict(model.named_parameters())
    assert params.keys() == expected.keys()
    for name, tensor in params.items():
        assert tensor.shape == expected[name].shape, name
        assert tensor.device.type == "cpu" and torch.isfinite(tensor).all(), name
    logits = bound_forward(model, params, arch, example_input(arch, "cpu", batch=2))
    assert torch.isfinite(logits).all()
    assert logits.std() > 0


def test_predictions_come_from_the_ghn_not_an_init(ghn):
    """Same GHN weights → identical tensors; another GHN seed → every tensor differs."""
    other = build_ghn(ghn.config, seed=2)
    a, b = ghn([graph_of(SMALL_GPT)])[0], build_ghn(ghn.config, seed=0)([graph_of(SMALL_GPT)])[0]
    c = other([graph_of(SMALL_GPT)])[0]
    for name in a:
        assert torch.equal(a[name], b[name]), name
        assert not torch.allclose(a[name], c[name]), name


def test_postprocessing_ranges():
    ghn = build_ghn(get_preset("logah-test"))
    params = ghn([graph_of(SMALL_GPT)])[0]
    ln_w, ln_b = params["transformer.h.0.ln_1.weight"], params["transformer.h.0.ln_1.bias"]
    assert ((ln_w > 0) & (ln_w < 2)).all() and (ln_b.abs() < 1).all()
    assert (params["transformer.h.0.attn.c_attn.bias"].abs() < 1).all()
    assert params["transformer.wte.weight"].pow(2).mean().sqrt().item() == pytest.approx(0.02, rel=1e-3)


def test_norms_of_predicted_weights_and_embeddings_are_fixed(ghn):
    """Why there is no predicted-parameter regulariser: the Frobenius norm of every weight and
    embedding a GHN predicts is set by its shape (unit RMS times the fan-in factor, or RMS 0.02),
    not by the GHN, so Σ‖W‖ over them is a constant (up to the normalisation's 1e-12 guard)."""
    from logah.layout import EMBEDDING
    from logah.postprocess import EMBEDDING_STD

    graph = graph_of(SMALL_GPT)
    specs = {spec.name: spec for node in graph.params for spec in node}
    other = build_ghn(ghn.config, seed=2)
    for params in (ghn([graph])[0], other([graph])[0]):
        for name, tensor in params.items():
            spec = specs[name]
            if spec.kind == WEIGHT:
                rms = weight_scale(spec, beta=2.0, residual=name.endswith("c_proj.weight"),
                                   n_layer=SMALL_GPT.n_layer)
            elif spec.kind == EMBEDDING:
                rms = EMBEDDING_STD
            else:
                continue
            expected = rms * tensor.numel() ** 0.5
            assert tensor.norm().item() == pytest.approx(expected, rel=1e-3), name


def test_low_rank_weights_have_rank_at_most_r():
    config = get_preset("logah-test")
    ghn = build_ghn(config)
    params = ghn([graph_of(WIDE_VIT)])[0]
    checked = 0
    for name, tensor in params.items():
        if tensor.dim() == 4:   # LoGAH's matricisation of a conv: (C_out·h) × (C_in·w)
            c_out, c_in, h, w = tensor.shape
            tensor = tensor.permute(0, 2, 1, 3).reshape(c_out * h, c_in * w)
        matrix = tensor.reshape(-1, tensor.shape[-1])
        if min(matrix.shape) > config.rank:
            assert numerical_rank(matrix) <= config.rank, name
            checked += 1
    assert checked >= 10


def test_rows_beyond_max_width_are_not_copies():
    """A vocabulary wider than K: extra rows are new combinations, never tiled copies."""
    config = GHNConfig(decoder="low-rank", hidden=16, layers=1, heads=2, rank=4, max_width=64)
    arch = GPT2Arch(n_layer=1, n_embd=16, n_head=2, vocab_size=200, n_positions=16)
    wte = build_ghn(config)([graph_of(arch)])[0]["transformer.wte.weight"]
    assert wte.shape == (200, 16)
    rows = wte.detach().numpy()
    assert len(np.unique(rows.round(7), axis=0)) == 200
    assert not np.allclose(rows[64:128], rows[:64])
    assert numerical_rank(wte) <= 4


def test_tiled_decoder_repeats_its_chunk():
    config = get_preset("ghn3-test")        # tile = hidden = 16
    params = build_ghn(config)([graph_of(WIDE_VIT)])[0]
    w = params["encoder.layers.encoder_layer_0.mlp.0.weight"]     # (96, 48)
    assert torch.equal(w[:16, :16], w[16:32, :16]) and torch.equal(w[:16, :16], w[:16, 32:48])
    b = params["encoder.layers.encoder_layer_0.mlp.0.bias"]
    assert torch.equal(b[:16], b[16:32])
    low = build_ghn(get_preset("logah-test"))([graph_of(WIDE_VIT)])[0]
    assert not torch.allclose(low["encoder.layers.encoder_layer_0.mlp.0.weight"][:16, :16],
                              low["encoder.layers.encoder_layer_0.mlp.0.weight"][16:32, :16])


@pytest.mark.parametrize("arch", [SMALL_GPT, TIED_GPT], ids=["gpt2", "tied-gpt2"])
def test_tiled_class_head_predicts_the_lm_head_only(arch):
    """GHN-3's class head (``num_classes`` = 10 rows, repeated) makes the LM head's rows periodic
    with period 10; every other matrix repeats the 16-wide chunk. The last MLP projection of a
    tied GPT-2 is not its head: its output rows repeat every 16, not every 10."""
    config = get_preset("ghn3-test")
    assert (config.tile or config.hidden, config.num_classes) == (16, 10)
    params = build_ghn(config)([graph_of(arch)])[0]
    head = params["transformer.wte.weight" if arch.tie_word_embeddings else "lm_head.weight"]
    assert torch.equal(head[10], head[0]) and not torch.equal(head[16], head[0])
    c_proj = params["transformer.h.1.mlp.c_proj.weight"].t()   # Conv1D stores (in, out)
    assert torch.equal(c_proj[16], c_proj[0]) and not torch.equal(c_proj[10], c_proj[0])
    if not arch.tie_word_embeddings:   # an untied embedding is not the head either
        wte = params["transformer.wte.weight"]
        assert torch.equal(wte[16], wte[0]) and not torch.equal(wte[10], wte[0])


def test_prediction_independent_of_meta_batch(ghn):
    alone = ghn([graph_of(SMALL_VIT)])[0]
    batched = ghn([graph_of(SMALL_GPT), graph_of(WIDE_VIT), graph_of(SMALL_VIT)])[2]
    reordered = ghn([graph_of(SMALL_VIT), graph_of(TIED_GPT)])[0]
    for name in alone:
        torch.testing.assert_close(batched[name], alone[name], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(reordered[name], alone[name], rtol=1e-5, atol=1e-6)


def _digits(n=32, size=16):
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images[:n], dtype=torch.float32)[:, None] / 16
    x = F.interpolate(x, size=(size, size), mode="bilinear").expand(-1, 3, -1, -1)
    return x, torch.tensor(data.target[:n])


def test_task_loss_gradients_reach_every_ghn_parameter(ghn):
    x, y = _digits()
    vit_params, gpt_params = ghn([graph_of(SMALL_VIT), graph_of(SMALL_GPT)])
    loss = F.cross_entropy(bound_forward(build_model(SMALL_VIT), vit_params, SMALL_VIT, x), y)
    tokens = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    logits = bound_forward(build_model(SMALL_GPT), gpt_params, SMALL_GPT, tokens)
    loss = loss + F.cross_entropy(logits[:, :-1].reshape(-1, 100), tokens[:, 1:].reshape(-1))
    loss.backward()
    for name, p in ghn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_unit_grid_reads_rows_at_relative_positions():
    """With ``unit_grid`` G, a matrix of n rows reads the G grid rows at positions (k + ½)·G/n − ½:
    G rows are the grid itself, 2G rows interpolate between neighbours, and any width works."""
    decoder = LowRankDecoder(hidden=8, rank=4, max_width=64, unit_grid=8)
    emb = torch.randn(1, 8)
    narrow, wide = decoder(emb, [DecodeTask(row=0, shape=(8, 8, 1, 1)),
                                 DecodeTask(row=0, shape=(16, 8, 1, 1))])
    narrow, wide = narrow[:, :, 0, 0], wide[:, :, 0, 0]
    torch.testing.assert_close(wide[0], narrow[0])                          # clamped at the edge
    torch.testing.assert_close(wide[1], 0.75 * narrow[0] + 0.25 * narrow[1])
    torch.testing.assert_close(wide[2], 0.25 * narrow[0] + 0.75 * narrow[1])
    torch.testing.assert_close(wide[15], narrow[7])
    tokens = decoder(emb, [DecodeTask(row=0, shape=(16, 8, 1, 1), identity_rows=True)])[0]
    tokens = tokens[:, :, 0, 0]                # vocabulary rows: the paper's rows 0..15
    torch.testing.assert_close(tokens[:8], narrow)
    assert not torch.allclose(tokens[8:], wide[8:])
    odd = decoder(emb, [DecodeTask(row=0, shape=(300, 37, 1, 1))])[0][:, :, 0, 0]
    assert odd.shape == (300, 37) and numerical_rank(odd) <= 4
    with pytest.raises(LogahError, match="unit_grid"):
        GHNConfig(decoder="low-rank", rank=16, max_width=64, unit_grid=8).validate()


@pytest.mark.parametrize("scaling", ["fan-in", "mean-field"])
def test_mean_field_scaling_makes_a_wider_matrix_a_finer_sampling(scaling):
    """With the unit grid and mean-field scaling, a predicted matrix 4× wider applied to a
    constant input responds with the interpolation of the narrow matrix's response: the wider
    layer is a finer sampling of the same function (a sum over inputs became an average, and the
    RMS normalisation is the grid's). With He's fan-in scaling the response is sqrt(4) = 2× larger."""
    grid = 16
    decoder = LowRankDecoder(hidden=8, rank=4, max_width=256, unit_grid=grid)
    reference = grid if scaling == "mean-field" else 0
    emb = torch.randn(1, 8, generator=torch.Generator().manual_seed(0))
    responses = []
    for width in (grid, 4 * grid):
        spec = ParamSpec(name="w", shape=(width, width), kind=WEIGHT)
        scale = weight_scale(spec, beta=2.0, residual=False, n_layer=1, mean_field_width=reference)
        matrix = decoder(emb, [DecodeTask(row=0, shape=(width, width, 1, 1), scale=scale,
                                          normalize=True)])[0][:, :, 0, 0]
        responses.append(matrix.detach() @ torch.ones(width))
    narrow, wide = responses
    resampled = F.interpolate(narrow[None, None], size=4 * grid, mode="linear")[0, 0]
    torch.testing.assert_close(wide, resampled * (1.0 if scaling == "mean-field" else 2.0))


def test_mean_field_scaling_needs_a_unit_grid():
    with pytest.raises(LogahError, match="mean-field"):
        GHNConfig(decoder="low-rank", rank=16, weight_scaling="mean-field").validate()
    GHNConfig(decoder="low-rank", rank=16, unit_grid=64, weight_scaling="mean-field").validate()


def test_relative_depth_encoding_reads_the_same_rows_at_every_depth():
    """``depth_encoding="relative"``: the input reads row 0 and the deepest node row 255 whatever
    the depth, rows grow with the distance from the input, and a meta-batch partner (padding)
    does not move them; ``absolute`` reads the distance itself, so a deeper network's last
    nodes read rows a shallower one never reaches."""
    from dataclasses import replace

    from logah.ghn import GraphBatch

    shallow, deep = SMALL_VIT, replace(SMALL_VIT, num_layers=8)
    config = replace(get_preset("logah-cpu"), depth_encoding="relative")
    relative, absolute = build_ghn(config, seed=0), build_ghn(get_preset("logah-cpu"), seed=0)
    graphs = [graph_of(shallow), graph_of(deep)]
    batch = GraphBatch(graphs, torch.device("cpu"))
    rows = relative.depth_rows(batch)
    for i, g in enumerate(graphs):
        distance = torch.from_numpy(g.input_distance)
        own = rows[i, :g.num_nodes]
        assert own[distance == 0].eq(0).all() and own[distance == distance.max()].eq(255).all()
        order = torch.argsort(distance)
        assert (own[order].diff() >= 0).all()
        alone = relative.depth_rows(GraphBatch([g], torch.device("cpu")))[0]
        assert torch.equal(alone, own)
    assert relative.input_dist.num_embeddings == 256
    assert torch.equal(absolute.depth_rows(batch), batch.input_dist)
    assert absolute.depth_rows(batch)[1].max() > absolute.depth_rows(batch)[0].max()
    with pytest.raises(LogahError, match="depth_encoding must be"):
        replace(config, depth_encoding="depth").validate()


def test_relative_depth_encoding_predicts_and_trains():
    """A relative-encoding GHN predicts every parameter of a GPT-2 and a ViT, the prediction does
    not depend on the meta-batch, and the task loss reaches its distance table."""
    from dataclasses import replace

    ghn = build_ghn(replace(get_preset("logah-cpu"), depth_encoding="relative"), seed=0)
    alone = ghn([graph_of(SMALL_VIT)])[0]
    vit_params, gpt_params = ghn([graph_of(SMALL_GPT), graph_of(SMALL_VIT)])[::-1]
    assert set(alone) == {name for name, _ in build_model(SMALL_VIT).named_parameters()}
    for name in alone:
        torch.testing.assert_close(vit_params[name], alone[name], rtol=1e-5, atol=1e-6)
    x, y = _digits()
    loss = F.cross_entropy(bound_forward(build_model(SMALL_VIT), vit_params, SMALL_VIT, x), y)
    loss.backward()
    assert ghn.input_dist.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p).all() for p in gpt_params.values())
