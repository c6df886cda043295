"""How alike a network's layers are: grouping by role, the similarity measure, the training term."""

import math

import pytest
import torch
from test_training import tiny_config

from logah.layer_roles import layer_alikeness, layer_similarity, roles
from logah.training import GHNTrainer


def _blocks(matrices: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """GPT-2-style names: one ``c_fc`` matrix per block, plus a bias and a one-layer role."""
    params = {f"transformer.h.{i}.mlp.c_fc.weight": m for i, m in enumerate(matrices)}
    params["transformer.h.0.mlp.c_fc.bias"] = torch.zeros(4)
    params["lm_head.weight"] = torch.randn(10, 4)
    return params


def test_roles_group_each_layers_matrix_and_skip_biases():
    matrices = [torch.randn(4, 4) for _ in range(3)]
    grouped = roles(_blocks(matrices).items())
    assert set(grouped) == {"transformer.h.*.mlp.c_fc.weight", "lm_head.weight"}
    assert all(a is b for a, b in zip(grouped["transformer.h.*.mlp.c_fc.weight"], matrices))


def test_copies_are_alike_and_independent_random_layers_are_not():
    one = torch.randn(64, 64)
    assert float(layer_alikeness(_blocks([one, one.clone(), one.clone()]))) == pytest.approx(1.0)
    assert float(layer_alikeness(_blocks([one, -one, one]))) == pytest.approx(1.0)   # squared
    assert layer_similarity([one, one.clone()]) == pytest.approx(1.0)
    generator = torch.Generator().manual_seed(0)
    independent = [torch.randn(64, 64, generator=generator) for _ in range(4)]
    assert float(layer_alikeness(_blocks(independent))) < 0.01       # about 1 / 4096
    assert abs(layer_similarity(independent)) < 0.05


def test_a_network_of_one_layer_per_role_has_nothing_to_compare():
    assert layer_alikeness(_blocks([torch.randn(4, 4)])) is None
    assert layer_alikeness(_blocks([torch.randn(4, 4), torch.randn(4, 4)])) is not None
    assert math.isnan(layer_similarity([torch.randn(4, 4)]))


def test_alikeness_is_differentiable_and_its_gradient_unties_the_layers():
    base = torch.randn(16, 16)
    layers = [(base + 0.1 * torch.randn(16, 16)).requires_grad_(True) for _ in range(3)]
    before = float(layer_alikeness(_blocks(layers)).detach())
    layer_alikeness(_blocks(layers)).backward()
    with torch.no_grad():
        stepped = [layer - 0.5 * layer.grad for layer in layers]
    assert all(layer.grad is not None and layer.grad.abs().sum() > 0 for layer in layers)
    assert float(layer_alikeness(_blocks(stepped))) < before


def test_layer_diversity_adds_lambda_times_the_predictions_alikeness_to_the_training_loss():
    plain = GHNTrainer(tiny_config(seed=3, meta_batch=4))
    diverse = GHNTrainer(tiny_config(seed=3, meta_batch=4, layer_diversity=2.5))
    archs = plain.meta_batch(0)
    assert archs == diverse.meta_batch(0) and any(a.depth > 1 for a in archs)
    torch.manual_seed(0)
    task_loss = plain.compute_loss(0)
    torch.manual_seed(0)
    total = diverse.compute_loss(0)
    predictions = diverse.model([diverse.graph(a) for a in archs])
    alikeness = [layer_alikeness(p) for p in predictions]
    expected = sum(float(a.detach()) for a in alikeness if a is not None) / len(archs)
    assert expected > 0
    assert float((total - task_loss).detach()) == pytest.approx(2.5 * expected, rel=1e-4)


def test_held_out_evaluation_reports_how_alike_the_predicted_layers_are():
    """The mean over the held-out networks that have layers to compare: a one-block network's
    0 would pull it toward 'untied'."""
    trainer = GHNTrainer(tiny_config())
    deep = [a for a in trainer.archs if a.depth > 1][:2]
    shallow = [a for a in trainer.archs if a.depth == 1][:1]
    assert deep and shallow
    alone = trainer.evaluate(deep)["heldout_layer_alikeness"]
    assert 0.0 < alone <= 1.0
    assert trainer.evaluate(deep + shallow)["heldout_layer_alikeness"] == pytest.approx(alone)
    assert "heldout_layer_alikeness" not in trainer.evaluate(shallow)
