"""The baselines that need no GHN beyond the paper's: mimetic (Trockman & Kolter, ICML 2023) and
LSUV (Mishkin & Matas, ICLR 2016), each held to its defining property on every registered
family, with real small models and real data, and run end to end through ``logah finetune``."""

import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from conftest import SMALL_TARGETS
from logah.cli import main
from logah.errors import LogahError
from logah.families import FAMILIES, IMAGE, get_family
from logah.finetune import FinetuneConfig
from logah.init_kinds import BASELINE_INITS, INIT_KINDS, PAPER_NAMES
from logah.inits import initial_model
from logah.lsuv import TOLERANCE, layers_in_forward_order, output_variance
from logah.mimetic import MimeticScalars
from logah.targets import arch_to_dict, forward
from logah.tasks import DataConfig, make_task

DIGITS = DataConfig(dataset="digits", batch_size=32, eval_batches=2)
TEXT = DataConfig(dataset="shakespeare", batch_size=4, block_size=32, vocab_size=1024,
                  eval_batches=2)


def data_for(family: str) -> DataConfig:
    return DIGITS if get_family(family).data_kind == IMAGE else TEXT


@pytest.fixture(scope="module")
def tasks():
    """Per family: the seed-0 task of its small target on real data, and the target fitted to it."""
    made = {}
    for family in FAMILIES:
        task = make_task(SMALL_TARGETS[family], data_for(family), seed=0)
        made[family] = task, task.fit(SMALL_TARGETS[family])
    return made


def attention(model, arch):
    return get_family(arch.family).attention_layers(model, arch)


def head_products(layer):
    """Per query head h, in the paper's row-vector convention, ``W_q^h W_k^jᵀ = q_hᵀ k_j`` (the
    bilinear form of h's scores) and ``W_v^j W_o^h = (o_h v_j)ᵀ``, j = h // (H / H_kv) the KV
    head h reads (Hugging Face's ``repeat_kv``)."""
    width, group = layer.q.shape[0] // layer.heads, layer.heads // layer.kv_heads
    for h in range(layer.heads):
        rows, kv = slice(h * width, (h + 1) * width), slice(h // group * width,
                                                           (h // group + 1) * width)
        yield (layer.q[rows].T @ layer.k[kv]).detach(), (layer.o[:, rows] @ layer.v[kv]).T.detach()


def diagonal_and_off(product: torch.Tensor) -> tuple[float, float]:
    """Mean of the diagonal, mean magnitude of the off-diagonal entries."""
    n = product.shape[0]
    diagonal = product.diagonal()
    off = (product.abs().sum() - diagonal.abs().sum()) / (n * n - n)
    return diagonal.mean().item(), off.item()


def test_the_new_inits_are_named_baselines():
    assert {"mimetic", "lsuv"} <= set(BASELINE_INITS) <= set(INIT_KINDS)
    assert PAPER_NAMES["mimetic"] == "Mimetic" and PAPER_NAMES["lsuv"] == "LSUV"


# --- mimetic ----------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_mimetic_heads_have_a_dominant_positive_qk_and_negative_vo_diagonal(family):
    arch = SMALL_TARGETS[family]
    for init, holds in (("mimetic", True), ("random", False)):
        model = initial_model(arch, init, seed=0)
        results = []
        for layer in attention(model, arch):
            for qk, vo in head_products(layer):
                (qk_diag, qk_off), (vo_diag, vo_off) = diagonal_and_off(qk), diagonal_and_off(vo)
                results.append(qk_diag > 2 * qk_off and vo_diag < 0 and -vo_diag > 2 * vo_off)
        # every head of every layer has both patterns; the default init has them nowhere
        assert (results and all(results)) if holds else not any(results), (family, init)


@pytest.mark.parametrize("family", FAMILIES)
def test_mimetic_scalars_shape_the_products_as_the_paper_says(family):
    arch = SMALL_TARGETS[family]
    dim = arch.width

    def layers(**scalars):
        return attention(initial_model(arch, "mimetic", seed=0, mimetic=MimeticScalars(**scalars)),
                         arch)

    # α → 0: each head's W_q W_kᵀ is β × a projection on its d_h-dimensional subspace
    for layer in layers(qk_alpha=1e-4, qk_beta=0.5, vo_alpha=1e-4, vo_beta=0.3):
        width = dim // layer.heads
        for qk, _ in head_products(layer):
            values = torch.linalg.svdvals(qk)
            torch.testing.assert_close(values[:width], torch.full((width,), 0.5), atol=2e-3, rtol=0)
            assert values[width:].max() < 1e-4
        # the layer's W_v W_o sums to -β on the diagonal (exactly -β I without grouping)
        whole = sum(vo for _, vo in head_products(layer))
        assert whole.diagonal().mean().item() == pytest.approx(-0.3, abs=0.01)
        if layer.kv_heads == layer.heads:
            torch.testing.assert_close(whole, -0.3 * torch.eye(dim), atol=2e-3, rtol=0)
        else:   # only H_kv·d_h value directions exist
            assert torch.linalg.matrix_rank(whole) == layer.kv_heads * width
    # the paper's scalars: W_v W_o = α Z - β I over the layer, Z of N(0, 1/D) entries
    for layer in layers():
        if layer.kv_heads == layer.heads:
            whole = sum(vo for _, vo in head_products(layer))
            assert whole.diagonal().mean().item() == pytest.approx(-0.4, abs=4 * 0.4 / dim)
            off = whole[~torch.eye(dim, dtype=torch.bool)]
            assert off.std().item() == pytest.approx(0.4 / math.sqrt(dim), rel=0.25)

    # a larger β / α makes the diagonal more prominent; more α makes it less
    def prominence(**scalars) -> float:
        ratios = [diagonal_and_off(qk)[0] / diagonal_and_off(qk)[1]
                  for layer in layers(**scalars) for qk, _ in head_products(layer)]
        return sum(ratios) / len(ratios)

    assert prominence(qk_beta=1.4) > prominence() > prominence(qk_alpha=1.4)


@pytest.mark.parametrize("family", FAMILIES)
def test_mimetic_changes_the_attention_projections_only(family):
    arch = SMALL_TARGETS[family]
    mimetic, random = initial_model(arch, "mimetic", seed=3), initial_model(arch, "random", seed=3)
    with torch.no_grad():
        for model in (mimetic, random):
            layers = attention(model, arch)
            assert len(layers) == arch.depth
            if model is mimetic:
                changed = [not torch.equal(getattr(a, p), getattr(b, p)) for a, b in
                           zip(layers, attention(random, arch)) for p in ("q", "k", "v", "o")]
                assert all(changed)
            for layer in layers:
                for view in (layer.q, layer.k, layer.v, layer.o):
                    view.zero_()
    for (name, a), (_, b) in zip(mimetic.state_dict().items(), random.state_dict().items()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("family", FAMILIES)
def test_mimetic_is_a_function_of_its_seed(family):
    arch = SMALL_TARGETS[family]
    a, b, other = (initial_model(arch, "mimetic", seed=s) for s in (5, 5, 6))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert not torch.equal(attention(a, arch)[0].q, attention(other, arch)[0].q)


@pytest.mark.parametrize("settings, message", [
    (dict(qk_alpha=0.0), "qk_alpha must be a finite number > 0, got 0.0"),
    (dict(vo_alpha=-1.0), "vo_alpha must be a finite number > 0"),
    (dict(qk_beta=-0.1), "qk_beta must be a finite number ≥ 0"),
    (dict(vo_beta=float("nan")), "vo_beta must be a finite number ≥ 0, got nan"),
    (dict(qk_beta=True), "qk_beta must be"),
])
def test_a_bad_mimetic_scalar_is_one_clear_error(settings, message):
    with pytest.raises(LogahError, match=message):
        initial_model(SMALL_TARGETS["vit"], "mimetic", mimetic=MimeticScalars(**settings))


def test_fine_tuning_configs_check_the_mimetic_settings():
    base = dict(target=arch_to_dict(SMALL_TARGETS["vit"]), data=DIGITS)
    FinetuneConfig(**base, init="mimetic", mimetic_qk_beta=1.0).validate()
    FinetuneConfig(**base, init="random").validate()        # defaults are no setting
    with pytest.raises(LogahError, match="mimetic_qk_alpha must be > 0, got 0"):
        FinetuneConfig(**base, init="mimetic", mimetic_qk_alpha=0).validate()
    with pytest.raises(LogahError, match="mimetic_vo_beta must be a finite number"):
        FinetuneConfig(**base, init="mimetic", mimetic_vo_beta=float("inf")).validate()
    with pytest.raises(LogahError, match="init 'lsuv' has none"):
        FinetuneConfig(**base, init="lsuv", mimetic_vo_beta=0.5).validate()


# --- LSUV ---------------------------------------------------------------------------------------

def first_batch(task):
    return task.batch(0, "cpu")[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_lsuv_gives_every_scaled_layer_unit_output_variance(family, tasks):
    task, arch = tasks[family]
    model = initial_model(arch, "lsuv", seed=0, task=task).eval()
    inputs = first_batch(task)
    layers = layers_in_forward_order(model, arch, inputs)
    # the four projections of every attention layer, and every other weight matrix but the
    # embedding tables (a tied LM head is one of them)
    in_attention = {t.untyped_storage().data_ptr() for layer in attention(model, arch)
                    for t in (layer.q, layer.k, layer.v, layer.o)}
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    others = [n for n, p in model.named_parameters()
              if n.endswith("weight") and p.dim() >= 2 and id(p) not in tables
              and p.untyped_storage().data_ptr() not in in_attention]
    assert len(layers) == 4 * arch.depth + len(others), [layer.name for layer in layers]
    for layer in layers:
        assert abs(output_variance(model, arch, inputs, layer) - 1) < TOLERANCE, layer.name
    # the last layer is the classifier or LM head: the logits themselves have unit variance
    with torch.no_grad():
        assert abs(forward(model, arch, inputs).var().item() - 1) < TOLERANCE
    # which the orthogonal start, on the same batch, is far from
    start = initial_model(arch, "orthogonal", seed=0).eval()
    assert sum(abs(output_variance(start, arch, inputs, layer) - 1) >= TOLERANCE
               for layer in layers_in_forward_order(start, arch, inputs)) > len(layers) // 2


@pytest.mark.parametrize("family", FAMILIES)
def test_lsuv_starts_orthogonal_and_only_rescales_layers(family, tasks):
    task, arch = tasks[family]
    scaled = initial_model(arch, "lsuv", seed=0, task=task)
    start = initial_model(arch, "orthogonal", seed=0)
    for name, param in start.named_parameters():     # the start: orthonormal rows or columns
        if name.endswith("weight") and param.dim() >= 2:
            matrix = param.detach().flatten(1)
            gram = matrix.T @ matrix if matrix.shape[0] >= matrix.shape[1] else matrix @ matrix.T
            torch.testing.assert_close(gram, torch.eye(len(gram)), atol=1e-4, rtol=0, msg=name)
    inputs = first_batch(task)
    factors = []
    with torch.no_grad():
        for mine, theirs in zip(layers_in_forward_order(scaled, arch, inputs),
                                layers_in_forward_order(start, arch, inputs)):
            assert mine.name == theirs.name
            (weight,), (origin,) = mine.weights, theirs.weights
            factor = ((weight * origin).sum() / (origin * origin).sum()).item()
            assert factor > 0
            torch.testing.assert_close(weight, factor * origin, msg=mine.name)
            factors.append(factor)
            weight.div_(factor)      # undone: what remains must be the orthogonal init itself
    assert any(abs(f - 1) > 0.1 for f in factors)
    for (name, a), (_, b) in zip(scaled.state_dict().items(), start.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_lsuv_is_a_function_of_seed_and_data(family, tasks):
    task, arch = tasks[family]
    a, b, other = (initial_model(arch, "lsuv", seed=s, task=task) for s in (0, 0, 1))
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                     other.state_dict().values()))
    shifted = make_task(arch, dataclasses.replace(data_for(family), batch_size=3), seed=0)
    moved = initial_model(arch, "lsuv", seed=0, task=shifted)   # another batch, other factors
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                     moved.state_dict().values()))


def test_lsuv_without_data_is_one_clear_error():
    with pytest.raises(LogahError, match="lsuv.*no task"):
        initial_model(SMALL_TARGETS["vit"], "lsuv")


# --- end to end -------------------------------------------------------------------------------

@pytest.mark.parametrize("init", ["mimetic", "lsuv"])
@pytest.mark.parametrize("family", FAMILIES)
def test_logah_finetune_runs_from_the_init(family, init, tmp_path, capsys):
    target = tmp_path / "target.json"
    target.write_text(json.dumps(arch_to_dict(SMALL_TARGETS[family])))
    text = get_family(family).data_kind != IMAGE
    args = ["finetune", "--target", str(target), "--init", init, "--steps", "2",
            "--eval-every", "1", "--eval-batches", "1", "--batch-size", "4" if text else "16",
            "--data", "shakespeare" if text else "digits", "--out", str(tmp_path / "run")]
    # a text model's whole test split takes minutes on 2 cores: images only go that far
    assert main(args + (["--block-size", "32", "--no-final-test"] if text else [])) == 0
    captured = capsys.readouterr()
    assert f"fine-tune ({init}): 2/2 (100%)" in captured.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    metric = "perplexity" if text else "accuracy"
    assert all(math.isfinite(summary[f"{k}_val_{metric}"]) for k in ("zero_shot", "best", "final"))
    assert text or math.isfinite(summary["test_accuracy"])

